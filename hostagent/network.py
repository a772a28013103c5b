"""Each capsule's own network: a veth pair from the host into the capsule's network namespace, an
address from the agent's pool, NAT out of the host, DNS through the host's nameservers, and the
capsule's egress policy (hostagent/egress.py).

The policy is enforced in the HOST's network namespace, on the host's end of the veth: root inside
a capsule has CAP_NET_ADMIN in its own namespace and may change its addresses and routes there,
but no rule it can reach decides what leaves its veth.

Built from iproute2 (`ip`), util-linux (`nsenter`, to configure the capsule's end) and nftables
(`nft`), in one table of this agent's own. What each capsule holds (its slot in the pool, its
namespace, its policy) is recorded in `<state_dir>/<sandbox_id>.json` before anything is created,
so that an agent restarted after a crash can re-attach its capsules or clean up after them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import re
import shutil
import subprocess
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from hostagent.blocking import run_blocking
from hostagent.egress import Link, Policy, Table, TableContents
from hostagent.errors import InvalidArgument, NotFound, ResourceExhausted, validate_sandbox_id

__all__ = ["Attachment", "CapsuleNetworks", "Link", "NetworkUnavailable", "Policy", "pool_argument"]

log = logging.getLogger(__name__)

DEFAULT_POOL = "10.213.0.0/16"
DEFAULT_TABLE = "wrenn"
DEFAULT_PREFIX = "wrn"
# The host's resolver configuration; systemd-resolved's upstream list when the first names only
# its loopback stub (127.0.0.53), which no capsule can reach.
RESOLV_CONFS = (Path("/etc/resolv.conf"), Path("/run/systemd/resolve/resolv.conf"))
MAX_NAMESERVERS = 3  # glibc reads no more
CAPSULE_INTERFACE = "eth0"
IFNAMSIZ = 15  # usable characters of a Linux interface name
COMMAND_TIMEOUT = 10.0
BINARIES = {"ip": "iproute2", "nft": "nftables", "nsenter": "util-linux"}
SBIN_PATH = "/usr/local/sbin:/usr/sbin:/sbin"
IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
TABLE_NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,31}")
PREFIX_RE = re.compile(r"[a-z][a-z0-9]{0,9}")
CHAIN_RE = re.compile(r"capsule_(\d+)")


@dataclass(frozen=True)
class NetworkConfig:
    """Where capsule networks come from: two agents on one machine need one each."""

    pool: str = DEFAULT_POOL
    table: str = DEFAULT_TABLE
    prefix: str = DEFAULT_PREFIX


class NetworkUnavailable(Exception):
    """Capsule networking cannot work on this host, or a command that sets it up failed."""


def parse_pool(value: str) -> ipaddress.IPv4Network:
    """The address pool: an IPv4 network with room for at least one capsule's /30."""
    try:
        pool = ipaddress.IPv4Network(value)
    except ValueError as error:
        raise ValueError(f"invalid capsule address pool {value!r}: {error}") from None
    if pool.prefixlen > 30:
        raise ValueError(
            f"invalid capsule address pool {value!r}: a capsule takes a /30, give a /30 or wider"
        )
    return pool


def pool_argument(value: str) -> str:
    """`type=` for an argparse option such as `--network-pool`: the pool in canonical form."""
    try:
        return str(parse_pool(value))
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


@dataclass(frozen=True)
class Attachment:
    """One capsule's record: its slot in the pool (which gives its veth, chain and addresses)."""

    sandbox_id: str
    index: int
    netns: str
    policy: Policy


@dataclass(frozen=True)
class Nameservers:
    usable: tuple[ipaddress.IPv4Address, ...]
    source: Path | None
    left_out: tuple[str, ...]  # loopback and IPv6 nameservers, which capsules cannot reach
    settings: tuple[str, ...]  # the `search`, `domain` and `options` lines of the source


def read_nameservers(paths: Sequence[Path]) -> Nameservers:
    """The first of `paths` that names a nameserver a capsule can reach (IPv4, not loopback)."""
    left_out: list[str] = []
    for path in paths:
        try:
            text = path.read_text()
        except OSError:
            continue
        usable, settings = [], []
        for line in text.splitlines():
            words = line.split()
            if len(words) >= 2 and words[0] == "nameserver":
                try:
                    address = ipaddress.ip_address(words[1].split("%")[0])
                except ValueError:
                    continue
                if address.version == 4 and not (address.is_loopback or address.is_unspecified):
                    usable.append(address)
                elif words[1] not in left_out:
                    left_out.append(words[1])
            elif words and words[0] in ("search", "domain", "options"):
                settings.append(" ".join(words))
        if usable:
            return Nameservers(tuple(usable[:MAX_NAMESERVERS]), path, tuple(left_out), tuple(settings))
    return Nameservers((), None, tuple(left_out), ())


class CapsuleNetworks:
    """The networks of one agent's capsules: one /30 of `pool` each (the host's end .1, the
    capsule's .2), veths named `<prefix><index>`, chains `capsule_<index>` in nftables'
    `inet <table>`. Two agents on one machine need a pool, a table and a prefix each."""

    def __init__(
        self,
        state_dir: Path,
        pool: str = DEFAULT_POOL,
        *,
        table: str = DEFAULT_TABLE,
        prefix: str = DEFAULT_PREFIX,
        resolv_confs: Sequence[Path] = RESOLV_CONFS,
        command_timeout: float = COMMAND_TIMEOUT,
    ) -> None:
        self.state_dir = state_dir
        self.pool = parse_pool(pool)
        if not TABLE_NAME_RE.fullmatch(table):
            raise ValueError(f"invalid nftables table name {table!r}: use up to 32 of a-z, 0-9 and _")
        if not PREFIX_RE.fullmatch(prefix):
            raise ValueError(f"invalid interface prefix {prefix!r}: use 1 to 10 of a-z and 0-9")
        self.slots = self.pool.num_addresses // 4
        if len(prefix) + len(str(self.slots - 1)) > IFNAMSIZ:
            raise ValueError(f"interface prefix {prefix!r} and {self.slots} slots make names over {IFNAMSIZ}")
        self.prefix = prefix
        self.table = Table(table, self.pool)
        self.resolv_confs = tuple(resolv_confs)
        self.command_timeout = command_timeout
        search_path = os.environ.get("PATH", "") + ":" + SBIN_PATH
        self._binaries = {name: shutil.which(name, path=search_path) for name in BINARIES}
        self._interface_re = re.compile(re.escape(prefix) + r"(\d+)")
        self._attachments: dict[str, Attachment] | None = None
        self._lock = asyncio.Lock()
        self._warned_no_dns = False

    # --- what the agent calls ------------------------------------------------------------

    def probe(self) -> str | None:
        """Why capsule networking cannot work here, or None. Blocks for a few commands (tens of
        milliseconds) and changes nothing but a veth pair it creates and deletes at once."""
        if os.geteuid() != 0:
            return (
                f"capsule networking needs root to create veth pairs and nftables rules "
                f"(the agent runs as uid {os.geteuid()})"
            )
        missing = [
            f"{name} (Debian package {BINARIES[name]})" for name, path in self._binaries.items() if not path
        ]
        if missing:
            return "capsule networking needs " + ", ".join(missing)
        if not Path("/proc/self/ns/net").exists():
            return "this kernel has no network namespaces (/proc/self/ns/net is missing)"
        sample = Link("probe", f"{self.prefix}0", "capsule_0", *self._addresses(0))
        try:
            self._run(
                ["nft", "-c", "-f", "-"],
                "\n".join(self.table.base() + self.table.capsule(sample, Policy(), ())),
            )
        except NetworkUnavailable as error:
            return f"nftables refuses the capsule rules: {error}"
        try:
            self._run(
                ["ip", "link", "add", f"{self.prefix}p0", "type", "veth", "peer", "name", f"{self.prefix}p1"]
            )
            self._run(["ip", "link", "del", f"{self.prefix}p0"])
        except NetworkUnavailable as error:
            return f"cannot create a veth pair: {error}"
        overlap = self._pool_overlap()
        if overlap:
            return overlap
        self._warn_about_forward_drops()
        return None

    async def attach(self, sandbox_id: str, netns: str, policy: Policy) -> None:
        """Give the namespace at `netns` (a path such as /proc/<pid>/ns/net) its network. Again for
        an attached capsule (a new namespace, an agent restart): rebuilt in the same slot."""
        async with self._lock:
            await run_blocking(self._attach, sandbox_id, netns, policy)

    async def set_policy(self, sandbox_id: str, policy: Policy) -> None:
        """Replace the capsule's rules in one transaction; new connections see them at once, open
        ones go on."""
        async with self._lock:
            await run_blocking(self._set_policy, sandbox_id, policy)

    async def detach(self, sandbox_id: str) -> None:
        """Remove the capsule's veth, chain and record; nothing to do for one without a network."""
        async with self._lock:
            await run_blocking(self._detach, sandbox_id)

    def link(self, sandbox_id: str) -> Link | None:
        """The capsule's veth, chain and addresses (`address` is the capsule's), if attached."""
        attachment = self._load().get(sandbox_id)
        return None if attachment is None else self._link(attachment)

    def attachments(self) -> dict[str, Attachment]:
        """The recorded capsules, by sandbox id: after a restart, the previous run's."""
        return dict(self._load())

    async def clean_leftovers(self, keep: Collection[str] = ()) -> list[str]:
        """Detach every recorded capsule not in `keep`, and remove veths and chains of this table
        and prefix that no record claims (a record lost in a crash). The detached ids, sorted."""
        async with self._lock:
            return await run_blocking(self._clean_leftovers, keep)

    async def restore(self) -> None:
        """Rewrite the whole table from the records, in one transaction: after an agent restart
        that keeps its capsules, or when someone flushed the host's ruleset (`nft flush ruleset`
        removes this table too, and with it every capsule's filter)."""
        async with self._lock:
            await run_blocking(self._restore)

    @staticmethod
    def policy(data: Mapping[str, Any] | None) -> Policy:
        """The policy kept beside a sandbox (the dict `Policy.to_json` and the servicer write),
        checked (InvalidArgument); None: the default policy."""
        return Policy.from_json(data)

    def describe(self) -> str:
        """What capsules get, in a line for the heartbeat's isolation report."""
        servers = self._nameservers()
        dns = (
            f"DNS via {', '.join(str(server) for server in servers.usable)}"
            if servers.usable
            else "NO DNS (the host's nameservers are loopback or IPv6 only)"
        )
        return (
            f"own network namespace per capsule: a veth from {self.pool} with NAT, egress filtered "
            f"in the host by nftables table inet {self.table.name}; {dns}"
        )

    def resolv_conf(self) -> str:
        """The text of a capsule's /etc/resolv.conf."""
        servers = self._nameservers()
        if not servers.usable:
            return (
                "# The host has no nameserver a capsule can reach (loopback or IPv6 only: "
                f"{', '.join(servers.left_out) or 'none'}), so capsules have no DNS.\n"
                "# Give the host a non-loopback IPv4 nameserver in /etc/resolv.conf.\n"
            )
        lines = [f"# From the host's {servers.source}: capsules reach these nameservers on port 53 only."]
        lines += [f"nameserver {server}" for server in servers.usable]
        return "\n".join([*lines, *servers.settings]) + "\n"

    def close(self, keep_capsules: bool = False) -> None:
        """At agent shutdown: remove every capsule's network and the table, unless the capsules
        outlive the agent (`keep_capsules`), whose next run re-attaches or restores them. Blocks."""
        if keep_capsules:
            return
        try:
            self._clean_leftovers(())
            self._nft([f"add table inet {self.table.name}", f"delete table inet {self.table.name}"])
        except NetworkUnavailable as error:
            log.warning("could not remove the capsule networks: %s", error)

    # --- the work, in threads ----------------------------------------------------------------

    def _attach(self, sandbox_id: str, netns: str, policy: Policy) -> None:
        validate_sandbox_id(sandbox_id)
        if not os.path.exists(netns):
            raise NetworkUnavailable(f"the network namespace {netns} of sandbox {sandbox_id} does not exist")
        previous = self._load().get(sandbox_id)
        if previous is not None:
            self._remove(previous)
        index = previous.index if previous is not None and previous.index < self.slots else self._free_slot()
        attachment = Attachment(sandbox_id, index, netns, policy)
        link = self._link(attachment)
        self._save(attachment)  # first, so that a crash from here on leaves a record to clean up
        try:
            self._enable_forwarding()
            self._nft(self.table.base() + self.table.capsule(link, policy, self._nameservers().usable))
            self._create_veth(link, netns)
        except BaseException:
            with contextlib.suppress(Exception):
                self._remove(attachment)
            self._forget(sandbox_id)
            raise
        log.info(
            "attached the network of %s: %s on %s, policy %s",
            sandbox_id,
            link.address,
            link.interface,
            policy,
        )

    def _set_policy(self, sandbox_id: str, policy: Policy) -> None:
        attachment = self._load().get(sandbox_id)
        if attachment is None:
            raise NotFound(f"sandbox {sandbox_id} has no network")
        link = self._link(attachment)
        self._nft(self.table.base() + self.table.capsule(link, policy, self._nameservers().usable))
        self._save(replace(attachment, policy=policy))
        log.info("network policy of %s is now %s", sandbox_id, policy)

    def _detach(self, sandbox_id: str) -> None:
        attachment = self._load().get(sandbox_id)
        if attachment is None:
            return
        self._remove(attachment)
        self._forget(sandbox_id)
        log.info("detached the network of %s", sandbox_id)

    def _clean_leftovers(self, keep: Collection[str]) -> list[str]:
        attachments = self._load()
        removed = sorted(sandbox_id for sandbox_id in attachments if sandbox_id not in keep)
        for sandbox_id in removed:
            self._remove(attachments[sandbox_id])
            self._forget(sandbox_id)
        claimed = {attachment.index for attachment in attachments.values()}
        for name in self._interfaces():
            match = self._interface_re.fullmatch(name)
            if match and int(match[1]) not in claimed:
                log.warning("removing %s, a capsule veth no record claims", name)
                self._delete_interface(name)
        present = self._table_contents()
        orphans = {int(m[1]) for chain in present.chains if (m := CHAIN_RE.fullmatch(chain))} - claimed
        orphans |= {
            int(m[1]) for name in present.hooked | present.listed if (m := self._interface_re.fullmatch(name))
        } - claimed
        commands = [
            command
            for index in sorted(orphans)
            for command in self.table.remove_capsule(f"{self.prefix}{index}", f"capsule_{index}", present)
        ]
        if commands:
            log.warning("removing the rules of capsule slots %s, which no record claims", sorted(orphans))
            self._nft(commands)
        if removed:
            log.info("cleaned up the networks of %s", ", ".join(removed))
        return removed

    def _restore(self) -> None:
        servers = self._nameservers().usable
        capsules = [
            self.table.capsule(self._link(attachment), attachment.policy, servers)
            for attachment in self._load().values()
        ]
        self._nft(self.table.restore(capsules))

    def _remove(self, attachment: Attachment) -> None:
        link = self._link(attachment)
        self._delete_interface(link.interface)  # and with it the capsule's end
        commands = self.table.remove_capsule(link.interface, link.chain, self._table_contents())
        if commands:
            self._nft(commands)

    def _create_veth(self, link: Link, netns: str) -> None:
        self._delete_interface(link.interface)  # a veth a lost record left in this slot
        self._run(
            [
                "ip",
                "link",
                "add",
                link.interface,
                "type",
                "veth",
                "peer",
                "name",
                CAPSULE_INTERFACE,
                "netns",
                netns,
            ]
        )
        # No IPv6 on the host's end: no link-local address a capsule could talk to (its IPv6
        # packets are dropped anyway, see Table.capsule).
        with contextlib.suppress(FileNotFoundError):
            Path(f"/proc/sys/net/ipv6/conf/{link.interface}/disable_ipv6").write_text("1\n")
        self._run(
            ["ip", "-batch", "-"],
            f"address add {link.gateway}/30 dev {link.interface}\nlink set {link.interface} up\n",
        )
        self._run(
            ["nsenter", f"--net={netns}", "--", self._binary("ip"), "-batch", "-"],
            f"link set lo up\n"
            f"address add {link.address}/30 dev {CAPSULE_INTERFACE}\n"
            f"link set {CAPSULE_INTERFACE} up\n"
            f"route add default via {link.gateway} dev {CAPSULE_INTERFACE}\n",
        )

    def _enable_forwarding(self) -> None:
        if IP_FORWARD.read_text().strip() != "1":
            IP_FORWARD.write_text("1\n")
            log.warning(
                "enabled net.ipv4.ip_forward (host-wide, until reboot) so that capsules' traffic "
                "can be routed out of the host"
            )

    # --- records --------------------------------------------------------------------------

    def _load(self) -> dict[str, Attachment]:
        if self._attachments is None:
            self._attachments = {}
            for path in sorted(self.state_dir.glob("*.json")):
                try:
                    data = json.loads(path.read_text())
                    attachment = Attachment(
                        str(data["sandbox_id"]),
                        int(data["index"]),
                        str(data["netns"]),
                        Policy.from_json(data["policy"]),
                    )
                    if attachment.sandbox_id != path.stem:
                        raise ValueError(f"it is for {attachment.sandbox_id}")
                except (OSError, ValueError, KeyError, TypeError, InvalidArgument) as error:
                    # Its veth and chain, if any, are orphans `clean_leftovers` removes.
                    log.warning("dropping the unreadable capsule network record %s: %s", path, error)
                    path.unlink(missing_ok=True)
                    continue
                self._attachments[attachment.sandbox_id] = attachment
        return self._attachments

    def _save(self, attachment: Attachment) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        path = self.state_dir / f"{attachment.sandbox_id}.json"
        data = {
            "sandbox_id": attachment.sandbox_id,
            "index": attachment.index,
            "netns": attachment.netns,
            "policy": attachment.policy.to_json(),
        }
        temporary = path.with_name(f".{path.name}.tmp")
        temporary.write_text(json.dumps(data))
        os.replace(temporary, path)
        self._load()[attachment.sandbox_id] = attachment

    def _forget(self, sandbox_id: str) -> None:
        self._load().pop(sandbox_id, None)
        (self.state_dir / f"{sandbox_id}.json").unlink(missing_ok=True)

    def _free_slot(self) -> int:
        taken = {attachment.index for attachment in self._load().values()}
        for index in range(self.slots):
            if index not in taken:
                return index
        raise ResourceExhausted(
            f"the capsule address pool {self.pool} is full: all {self.slots} of its /30s are taken"
        )

    def _addresses(self, index: int) -> tuple[ipaddress.IPv4Address, ipaddress.IPv4Address]:
        base = self.pool.network_address + 4 * index
        return base + 1, base + 2

    def _link(self, attachment: Attachment) -> Link:
        index = attachment.index
        return Link(
            attachment.sandbox_id, f"{self.prefix}{index}", f"capsule_{index}", *self._addresses(index)
        )

    def _nameservers(self) -> Nameservers:
        servers = read_nameservers(self.resolv_confs)
        if not servers.usable and not self._warned_no_dns:
            self._warned_no_dns = True
            log.warning(
                "capsules have no DNS: the host's nameservers (%s) are loopback or IPv6 only",
                ", ".join(servers.left_out) or "none",
            )
        return servers

    # --- commands ---------------------------------------------------------------------------

    def _binary(self, name: str) -> str:
        path = self._binaries[name]
        if path is None:
            raise NetworkUnavailable(f"{name} is not installed (Debian package {BINARIES[name]})")
        return path

    def _run(self, argv: list[str], stdin: str | None = None) -> str:
        command = [self._binary(argv[0]), *argv[1:]]
        try:
            result = subprocess.run(  # noqa: S603 - fixed argv, no shell
                command,
                input=stdin,
                capture_output=True,
                text=True,
                timeout=self.command_timeout,
                check=False,
            )
        except (OSError, subprocess.SubprocessError) as error:
            raise NetworkUnavailable(f"{' '.join(argv[:4])}: {error}") from None
        if result.returncode != 0:
            raise NetworkUnavailable(f"{' '.join(argv[:4])}: {result.stderr.strip() or result.returncode}")
        return result.stdout

    def _nft(self, commands: list[str]) -> None:
        self._run(["nft", "-f", "-"], "\n".join(commands) + "\n")

    def _table_contents(self) -> TableContents:
        try:
            listing = self._run(["nft", "-j", "list", "table", "inet", self.table.name])
        except NetworkUnavailable as error:
            if "No such file or directory" in str(error):
                return TableContents()
            raise
        return TableContents.from_json(json.loads(listing))

    def _interfaces(self) -> list[str]:
        return [link["ifname"] for link in json.loads(self._run(["ip", "-j", "link", "show"]) or "[]")]

    def _delete_interface(self, name: str) -> None:
        try:
            self._run(["ip", "link", "del", name])
        except NetworkUnavailable as error:
            if "Cannot find device" not in str(error):
                raise

    def _pool_overlap(self) -> str | None:
        """Why the pool collides with the host's own networks (another agent's pool, a LAN)."""
        for route in json.loads(self._run(["ip", "-j", "-4", "route", "show"]) or "[]"):
            dst, dev = route.get("dst", "default"), route.get("dev", "")
            if dst == "default" or self._interface_re.fullmatch(dev):
                continue
            network = ipaddress.IPv4Network(dst, strict=False)
            if network.overlaps(self.pool) and network.prefixlen >= self.pool.prefixlen:
                return (
                    f"the capsule address pool {self.pool} overlaps the host's route to {dst} "
                    f"(dev {dev}): choose another pool"
                )
        return None

    def _warn_about_forward_drops(self) -> None:
        """Another table that drops forwarded packets by default (Docker's iptables do) drops the
        capsules' traffic too: an accept in this table does not override a drop in another."""
        ruleset = json.loads(self._run(["nft", "-j", "list", "ruleset"]) or "{}")
        for item in ruleset.get("nftables", ()):
            chain = item.get("chain", {})
            if (
                chain.get("hook") == "forward"
                and chain.get("policy") == "drop"
                and chain.get("table") != (self.table.name)
            ):
                log.warning(
                    "%s table %s chain %s drops forwarded packets: capsules reach the internet only "
                    "if it accepts what comes from the %s* veths",
                    chain.get("family"),
                    chain.get("table"),
                    chain.get("name"),
                    self.prefix,
                )
