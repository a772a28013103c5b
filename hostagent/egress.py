"""A capsule's egress policy and the nftables rules that enforce it in the host's network namespace.

Pure text, no commands: hostagent/network.py feeds these scripts to `nft -f -`, each one a single
transaction, so a capsule's rules change all at once or not at all.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hostagent.errors import InvalidArgument
from protos import hostagent_pb2 as pb

MAX_CIDRS = 256

# Blocked for every capsule unless its allow_out names them: private and shared ranges, loopback,
# link-local (with the cloud metadata address 169.254.169.254), "this network", multicast, and the
# reserved 240/4 with the limited broadcast 255.255.255.255. The host's own addresses and the
# other capsules are blocked by rules of their own (`fib daddr type local` and the pool).
BLOCKED_V4 = (
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "224.0.0.0/4",
    "240.0.0.0/4",
)

# Refused whatever the policy says, allow_out included: loopback, "this network", link-local
# (the cloud metadata address with it); the host's own addresses and the pool (other capsules)
# are added per table.
NEVER_V4 = ("0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _invalid(message: str) -> InvalidArgument:
    return InvalidArgument(f"invalid network policy: {message}")


def parse_cidrs(field: str, values: Iterable[str]) -> tuple[str, ...]:
    """`values` as canonical CIDR strings; a bare address is its /32 (or /128)."""
    values = tuple(values)
    if len(values) > MAX_CIDRS:
        raise _invalid(f"{field} has {len(values)} entries, at most {MAX_CIDRS}")
    cidrs = []
    for position, value in enumerate(values):
        if not isinstance(value, str):
            raise _invalid(f"{field}[{position}] is not a string but {type(value).__name__}")
        where = f"{field}[{position}] {value[:80]!r}"
        try:
            network: Network = ipaddress.ip_network(value)
        except ValueError:
            try:
                loose = ipaddress.ip_network(value, strict=False)
            except ValueError:
                raise _invalid(
                    f"{where} is not a CIDR: give an IPv4 or IPv6 network such as 203.0.113.0/24 "
                    "or 2001:db8::/32"
                ) from None
            raise _invalid(f"{where} has host bits set: did you mean {loose}?") from None
        cidrs.append(str(network))
    return tuple(cidrs)


@dataclass(frozen=True)
class Policy:
    """Where a capsule may connect to: the proto's NetworkPolicy, checked and in canonical form."""

    allow_internet: bool = True
    # CIDRs (IPv4 or IPv6) the capsule may reach even inside a blocked range: allow wins over deny.
    allow_out: tuple[str, ...] = ()
    # CIDRs it may not reach even when the internet is allowed.
    deny_out: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "allow_out", parse_cidrs("allow_out", self.allow_out))
        object.__setattr__(self, "deny_out", parse_cidrs("deny_out", self.deny_out))

    @classmethod
    def from_proto(cls, message: pb.NetworkPolicy | None) -> Policy:
        """None is the default policy. Pass None for an unset field, not the empty message a
        proto getter returns for it: that one has allow_internet false (see `from_request`)."""
        if message is None:
            return cls()
        return cls(message.allow_internet, tuple(message.allow_out), tuple(message.deny_out))

    @classmethod
    def from_request(cls, request: pb.CreateSandboxRequest | pb.SetNetworkPolicyRequest) -> Policy:
        """The policy of a request's `network` field, the default one when it is unset."""
        return cls.from_proto(request.network if request.HasField("network") else None)

    def to_proto(self) -> pb.NetworkPolicy:
        return pb.NetworkPolicy(
            allow_internet=self.allow_internet, allow_out=self.allow_out, deny_out=self.deny_out
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "allow_internet": self.allow_internet,
            "allow_out": list(self.allow_out),
            "deny_out": list(self.deny_out),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> Policy:
        """The policy kept in a file (as `to_json` writes it), checked; None: the default one."""
        if data is None:
            return cls()
        return cls(
            bool(data.get("allow_internet", True)),
            tuple(data.get("allow_out", ())),
            tuple(data.get("deny_out", ())),
        )


@dataclass(frozen=True)
class Link:
    """One capsule's end of the host: its veth, its chain and its two addresses."""

    sandbox_id: str
    interface: str  # the host's end of the veth pair
    chain: str
    gateway: ipaddress.IPv4Address  # the host's address on the veth, the capsule's default route
    address: ipaddress.IPv4Address  # the capsule's one address


@dataclass(frozen=True)
class Table:
    """This agent's nftables table: its name and the address pool its capsules draw from."""

    name: str
    pool: ipaddress.IPv4Network

    def base(self) -> list[str]:
        """Commands that create the table's shared objects, or reset them to this text if present.

        `egress` maps each capsule's veth to its chain, for packets the host receives from it
        (input: to the host itself) and packets it routes for it (forward). `capsule_ifaces` names
        the veths, so that nothing from outside opens a connection into a capsule and so that the
        capsules' traffic is masqueraded behind the host's own address when it leaves the host.
        """
        t = f"inet {self.name}"
        return [
            f"add table {t}",
            f"add map {t} egress {{ type ifname : verdict ; }}",
            f"add set {t} capsule_ifaces {{ type ifname ; }}",
            # A refusal the capsule notices at once: a reset for TCP, admin-prohibited for the rest.
            f"add chain {t} refuse",
            f"flush chain {t} refuse",
            f"add rule {t} refuse meta l4proto tcp reject with tcp reset",
            f"add rule {t} refuse reject with icmpx admin-prohibited",
            f"add chain {t} input {{ type filter hook input priority filter ; policy accept ; }}",
            f"flush chain {t} input",
            f"add rule {t} input iifname vmap @egress",
            f"add chain {t} forward {{ type filter hook forward priority filter ; policy accept ; }}",
            f"flush chain {t} forward",
            f"add rule {t} forward iifname vmap @egress",
            f"add rule {t} forward oifname @capsule_ifaces ct state established,related accept",
            f"add rule {t} forward oifname @capsule_ifaces drop",
            f"add chain {t} postrouting {{ type nat hook postrouting priority srcnat ; policy accept ; }}",
            f"flush chain {t} postrouting",
            f"add rule {t} postrouting ip saddr {self.pool} oifname != @capsule_ifaces masquerade",
        ]

    def capsule(self, link: Link, policy: Policy, nameservers: Sequence[ipaddress.IPv4Address]) -> list[str]:
        """Commands that (re)write `link`'s chain and hook it to its veth; the order of the rules
        is the policy: what is allowed first (allow wins), then what is blocked, then the internet."""
        t, chain = f"inet {self.name}", link.chain
        rule = f"add rule {t} {chain}"
        allow_v4 = [cidr for cidr in policy.allow_out if ipaddress.ip_network(cidr).version == 4]
        deny_v4 = [cidr for cidr in policy.deny_out if ipaddress.ip_network(cidr).version == 4]
        commands = [
            f"add chain {t} {chain}",
            f"flush chain {t} {chain}",
            # Anti-spoofing comes first: a packet with another source could pass for another
            # capsule's connection (conntrack's `established`) or draw a reset to someone else.
            f'{rule} ip saddr != {link.address} drop comment "{link.sandbox_id}: its own address only"',
            # Capsules have no IPv6 address of their own, so no IPv6 packet from them is genuine.
            f"{rule} meta nfproto ipv6 drop",
            f"{rule} ct state established,related accept",
        ]
        if nameservers:
            servers = ", ".join(str(server) for server in nameservers)
            commands.append(f"{rule} ip daddr {{ {servers} }} meta l4proto {{ tcp, udp }} th dport 53 accept")
        never = [*NEVER_V4, str(self.pool)]
        commands += [
            # The platform and the other tenants, before allow_out: no policy opens them. Every
            # address of the host, whatever its range and whenever it was added; other capsules.
            f"{rule} fib daddr type {{ local, broadcast, multicast }} goto refuse",
            f"{rule} ip daddr {{ {', '.join(never)} }} goto refuse",
        ]
        if allow_v4:
            commands.append(f"{rule} ip daddr {{ {', '.join(allow_v4)} }} accept")
        blocked = [*BLOCKED_V4, *deny_v4]
        commands += [
            f"{rule} ip daddr {{ {', '.join(blocked)} }} goto refuse",
            f"{rule} {'accept' if policy.allow_internet else 'goto refuse'}",
            f'add element {t} capsule_ifaces {{ "{link.interface}" }}',
            f'add element {t} egress {{ "{link.interface}" : goto {chain} }}',
        ]
        return commands

    def remove_capsule(self, interface: str, chain: str, present: TableContents) -> list[str]:
        """Commands that unhook `interface` and delete `chain`, as far as they are `present`."""
        t = f"inet {self.name}"
        commands = []
        if interface in present.hooked:
            commands.append(f'delete element {t} egress {{ "{interface}" }}')
        if interface in present.listed:
            commands.append(f'delete element {t} capsule_ifaces {{ "{interface}" }}')
        if chain in present.chains:
            commands += [f"flush chain {t} {chain}", f"delete chain {t} {chain}"]
        return commands

    def restore(self, capsules: Iterable[list[str]]) -> list[str]:
        """Commands that replace the whole table (whatever became of it) with the base and `capsules`."""
        return [f"add table inet {self.name}", f"delete table inet {self.name}", *self.base()] + [
            command for commands in capsules for command in commands
        ]


@dataclass(frozen=True)
class TableContents:
    """What the table holds, from `nft -j list table`: chains, and the veths of `egress` and
    `capsule_ifaces`."""

    chains: frozenset[str] = frozenset()
    hooked: frozenset[str] = frozenset()
    listed: frozenset[str] = frozenset()

    @classmethod
    def from_json(cls, listing: dict[str, Any]) -> TableContents:
        chains: set[str] = set()
        hooked: set[str] = set()
        listed: set[str] = set()
        for item in listing.get("nftables", ()):
            if "chain" in item:
                chains.add(item["chain"]["name"])
            elif "map" in item and item["map"]["name"] == "egress":
                hooked.update(key for key, _verdict in item["map"].get("elem", ()))
            elif "set" in item and item["set"]["name"] == "capsule_ifaces":
                listed.update(item["set"].get("elem", ()))
        return cls(frozenset(chains), frozenset(hooked), frozenset(listed))
