"""The egress policy as the agent reads it, the rules it writes, and what capsule networking refuses
before running any command (hostagent/egress.py, hostagent/network.py). No process starts here:
tests/hostagent/test_network.py tries the rules from inside namespaces."""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
from pathlib import Path

import pytest

from hostagent.egress import MAX_CIDRS, Link, Table
from hostagent.errors import InvalidArgument, NotFound, ResourceExhausted
from hostagent.network import CapsuleNetworks, Policy, pool_argument, read_nameservers
from protos import hostagent_pb2 as pb
from protos import rules

NOT_A_CIDR = "is not a CIDR: give an IPv4 or IPv6 network such as 203.0.113.0/24 or 2001:db8::/32"


def test_no_policy_is_the_internet_and_nothing_private() -> None:
    assert Policy.from_proto(None) == Policy(allow_internet=True, allow_out=(), deny_out=())


def test_a_policy_message_is_read_in_canonical_form() -> None:
    message = pb.NetworkPolicy(
        allow_internet=False, allow_out=["203.0.113.7", "10.1.0.0/255.255.0.0"], deny_out=["2001:DB8::/32"]
    )
    assert Policy.from_proto(message) == Policy(False, ("203.0.113.7/32", "10.1.0.0/16"), ("2001:db8::/32",))


def test_an_unset_network_field_is_the_default_and_an_empty_one_blocks_the_internet() -> None:
    assert Policy.from_request(pb.CreateSandboxRequest(sandbox_id="cap-1")) == Policy()
    empty = pb.SetNetworkPolicyRequest(sandbox_id="cap-1", network=pb.NetworkPolicy())
    assert Policy.from_request(empty) == Policy(allow_internet=False)


@pytest.mark.parametrize(
    ("field", "values", "message"),
    [
        ("allow_out", ["203.0.113.0/24", "example.com"], f"allow_out[1] 'example.com' {NOT_A_CIDR}"),
        ("deny_out", [""], f"deny_out[0] '' {NOT_A_CIDR}"),
        ("deny_out", ["10.0.0.0/33"], f"deny_out[0] '10.0.0.0/33' {NOT_A_CIDR}"),
        ("allow_out", ["::1/129"], f"allow_out[0] '::1/129' {NOT_A_CIDR}"),
        ("allow_out", [" 10.0.0.0/8"], f"allow_out[0] ' 10.0.0.0/8' {NOT_A_CIDR}"),
        (
            "allow_out",
            ["10.1.2.3/8"],
            "allow_out[0] '10.1.2.3/8' has host bits set: did you mean 10.0.0.0/8?",
        ),
        (
            "deny_out",
            ["2001:db8::1/32"],
            "deny_out[0] '2001:db8::1/32' has host bits set: did you mean 2001:db8::/32?",
        ),
        (
            "allow_out",
            ["10.0.0.0/8"] * (MAX_CIDRS + 1),
            f"allow_out has {MAX_CIDRS + 1} entries, at most 256",
        ),
    ],
)
def test_a_bad_cidr_is_refused_naming_the_field_and_the_entry(
    field: str, values: list[str], message: str
) -> None:
    with pytest.raises(InvalidArgument) as refused:
        Policy.from_proto(pb.NetworkPolicy(allow_internet=True, **{field: values}))
    assert refused.value.message == f"invalid network policy: {message}"


def test_a_long_bad_entry_is_cut_in_the_message() -> None:
    with pytest.raises(InvalidArgument) as refused:
        Policy(allow_out=("x" * 500,))
    assert refused.value.message == f"invalid network policy: allow_out[0] {'x' * 80!r} {NOT_A_CIDR}"


def test_a_policy_survives_its_record_and_the_wire() -> None:
    policy = Policy(False, ("203.0.113.0/24",), ("198.51.100.0/24",))
    assert Policy.from_json(json.loads(json.dumps(policy.to_json()))) == policy
    assert Policy.from_proto(policy.to_proto()) == policy


def test_the_pool_option_takes_an_ipv4_network_with_room_for_a_capsule() -> None:
    assert pool_argument("10.213.0.0/16") == "10.213.0.0/16"
    with pytest.raises(argparse.ArgumentTypeError) as refused:
        pool_argument("10.213.0.1/16")
    assert (
        str(refused.value) == "invalid capsule address pool '10.213.0.1/16': 10.213.0.1/16 has host bits set"
    )
    with pytest.raises(argparse.ArgumentTypeError) as refused:
        pool_argument("10.213.0.0/31")
    assert str(refused.value) == (
        "invalid capsule address pool '10.213.0.0/31': a capsule takes a /30, give a /30 or wider"
    )
    with pytest.raises(argparse.ArgumentTypeError, match="invalid capsule address pool 'fd00::/64'"):
        pool_argument("fd00::/64")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"table": "Wrenn"}, "invalid nftables table name 'Wrenn': use up to 32 of a-z, 0-9 and _"),
        ({"prefix": "wr-n"}, "invalid interface prefix 'wr-n': use 1 to 10 of a-z and 0-9"),
        (
            {"prefix": "abcdefghij", "pool": "10.0.0.0/8"},
            "interface prefix 'abcdefghij' and 4194304 slots make names over 15",
        ),
    ],
)
def test_names_the_kernel_would_refuse_are_refused_at_once(
    tmp_path: Path, options: dict[str, str], message: str
) -> None:
    with pytest.raises(ValueError, match="^" + message.replace(".", r"\.") + "$"):
        CapsuleNetworks(tmp_path, **options)  # type: ignore[arg-type]


def test_nameservers_are_the_hosts_reachable_ones(tmp_path: Path) -> None:
    resolv = tmp_path / "resolv.conf"
    resolv.write_text(
        "# generated\nsearch corp.example\nnameserver 127.0.0.1\nnameserver 10.255.255.53\n"
        "nameserver fd00::53\nnameserver 198.51.100.53\nnameserver 198.51.100.54\n"
        "nameserver 198.51.100.55\noptions edns0 trust-ad\n"
    )
    networks = CapsuleNetworks(tmp_path / "state", resolv_confs=[resolv])
    assert networks.resolv_conf() == (
        f"# From the host's {resolv}: capsules reach these nameservers on port 53 only.\n"
        "nameserver 10.255.255.53\nnameserver 198.51.100.53\nnameserver 198.51.100.54\n"
        "search corp.example\noptions edns0 trust-ad\n"
    )


def test_a_loopback_stub_resolver_gives_way_to_its_upstream_list(tmp_path: Path) -> None:
    stub, upstream = tmp_path / "resolv.conf", tmp_path / "upstream.conf"
    stub.write_text("nameserver 127.0.0.53\noptions edns0\n")
    upstream.write_text("nameserver 192.0.2.53\n")
    servers = read_nameservers([stub, upstream])
    assert servers.usable == (ipaddress.IPv4Address("192.0.2.53"),)
    assert servers.source == upstream


def test_a_host_with_only_a_loopback_resolver_says_capsules_have_no_dns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.53\nnameserver ::1\n")
    networks = CapsuleNetworks(tmp_path / "state", resolv_confs=[resolv, tmp_path / "missing.conf"])
    with caplog.at_level(logging.WARNING, logger="hostagent.network"):
        text = networks.resolv_conf()
    assert text == (
        "# The host has no nameserver a capsule can reach (loopback or IPv6 only: 127.0.0.53, ::1), "
        "so capsules have no DNS.\n# Give the host a non-loopback IPv4 nameserver in /etc/resolv.conf.\n"
    )
    assert "capsules have no DNS: the host's nameservers (127.0.0.53, ::1) are loopback or IPv6 only" in (
        caplog.text
    )


def _capsule_rules(policy: Policy) -> list[str]:
    table = Table("wrenn", ipaddress.IPv4Network("10.213.0.0/16"))
    link = Link(
        "cap-1", "wrn1", "capsule_1", ipaddress.IPv4Address("10.213.0.5"), ipaddress.IPv4Address("10.213.0.6")
    )
    prefix = "add rule inet wrenn capsule_1 "
    commands = table.capsule(link, policy, [ipaddress.IPv4Address("10.255.255.53")])
    return [command.removeprefix(prefix) for command in commands if command.startswith(prefix)]


def test_the_rules_check_the_source_then_the_platform_then_allow_then_block_then_the_internet() -> None:
    rules = _capsule_rules(Policy(False, ("10.9.0.0/16", "2001:db8::/32"), ("198.51.100.0/24",)))
    assert rules == [
        'ip saddr != 10.213.0.6 drop comment "cap-1: its own address only"',
        "meta nfproto ipv6 drop",
        "ct state established,related accept",
        "ip daddr { 10.255.255.53 } meta l4proto { tcp, udp } th dport 53 accept",
        # The host, loopback, link-local and other capsules: before allow_out, which cannot open them.
        "fib daddr type { local, broadcast, multicast } goto refuse",
        "ip daddr { 0.0.0.0/8, 127.0.0.0/8, 169.254.0.0/16, 10.213.0.0/16 } goto refuse",
        "ip daddr { 10.9.0.0/16 } accept",
        "ip daddr { 0.0.0.0/8, 10.0.0.0/8, 100.64.0.0/10, 127.0.0.0/8, 169.254.0.0/16, 172.16.0.0/12, "
        "192.168.0.0/16, 224.0.0.0/4, 240.0.0.0/4, 198.51.100.0/24 } goto refuse",
        "goto refuse",
    ]
    assert _capsule_rules(Policy())[-1] == "accept"


async def test_attach_refuses_a_bad_sandbox_id(tmp_path: Path) -> None:
    networks = CapsuleNetworks(tmp_path)
    with pytest.raises(InvalidArgument) as refused:
        await networks.attach("../x", "/proc/self/ns/net", Policy())
    assert refused.value.message == rules.bad_sandbox_id("../x")


async def test_a_policy_for_a_capsule_without_a_network_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound) as refused:
        await CapsuleNetworks(tmp_path).set_policy("cap-1", Policy())
    assert refused.value.message == "sandbox cap-1 has no network"


async def test_a_full_pool_is_resource_exhausted(tmp_path: Path) -> None:
    record = {"sandbox_id": "cap-0", "index": 0, "netns": "/proc/1/ns/net", "policy": Policy().to_json()}
    (tmp_path / "cap-0.json").write_text(json.dumps(record))
    networks = CapsuleNetworks(tmp_path, pool="10.213.0.0/30")
    with pytest.raises(ResourceExhausted) as refused:
        await networks.attach("cap-1", "/proc/self/ns/net", Policy())
    assert (
        refused.value.message == "the capsule address pool 10.213.0.0/30 is full: all 1 of its /30s are taken"
    )


def test_a_damaged_record_is_dropped_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "cap-1.json").write_text("{not json")
    good = {"sandbox_id": "cap-2", "index": 3, "netns": "/proc/1/ns/net", "policy": Policy().to_json()}
    (tmp_path / "cap-2.json").write_text(json.dumps(good))
    networks = CapsuleNetworks(tmp_path)
    with caplog.at_level(logging.WARNING, logger="hostagent.network"):
        assert list(networks.attachments()) == ["cap-2"]
    assert "dropping the unreadable capsule network record" in caplog.text
    assert not (tmp_path / "cap-1.json").exists()
    link = networks.link("cap-2")
    assert link is not None
    assert (link.interface, link.chain, str(link.gateway), str(link.address)) == (
        "wrn3",
        "capsule_3",
        "10.213.0.13",
        "10.213.0.14",
    )


def test_a_kept_policy_is_checked_when_read_back(tmp_path: Path) -> None:
    assert CapsuleNetworks.policy(None) == Policy()
    kept = {"allow_internet": False, "allow_out": ["203.0.113.9"], "deny_out": []}
    assert CapsuleNetworks.policy(kept) == Policy(False, ("203.0.113.9/32",))
    with pytest.raises(InvalidArgument) as refused:
        CapsuleNetworks.policy({"allow_internet": True, "allow_out": [7], "deny_out": []})
    assert refused.value.message == "invalid network policy: allow_out[0] is not a string but int"


def test_the_isolation_report_names_the_pool_the_table_and_the_dns(tmp_path: Path) -> None:
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 10.255.255.53\n")
    networks = CapsuleNetworks(tmp_path / "state", "10.99.0.0/20", table="wrenn2", resolv_confs=[resolv])
    assert networks.describe() == (
        "own network namespace per capsule: a veth from 10.99.0.0/20 with NAT, egress filtered in the "
        "host by nftables table inet wrenn2; DNS via 10.255.255.53"
    )
    resolv.write_text("nameserver 127.0.0.53\n")
    assert networks.describe().endswith("; NO DNS (the host's nameservers are loopback or IPv6 only)")
