"""A capsule's network from the attacker's side: namespaces on this machine stand for capsules and
for the internet (tests/support/netns.py); every connection is tried from inside the capsule.

As root these run the real thing (ip, nft, nsenter). Without root only the probe test runs here,
checking what the agent says instead; the others are skipped with that reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hostagent.egress import TableContents
from hostagent.network import CapsuleNetworks, Link, Policy
from tests.support.netns import (
    Internet,
    Namespace,
    Outcome,
    connect_from,
    has_pending_connection,
    internet,
    ip,
    listener,
    namespace,
    port_of,
    receive_datagram,
    send_datagram_from,
    short_id,
)
from tests.support.polling import wait_until

pytestmark = [pytest.mark.timeout(60), pytest.mark.stack]  # ip, nft and nsenter as subprocesses

ROOT = Path(__file__).resolve().parents[2]
NOBODY = 65534
# Long enough for any machine to deliver a connection that is let through.
NOT_THROUGH = 1.0


@dataclass(frozen=True)
class Capsule:
    sandbox_id: str
    space: Namespace
    link: Link

    @property
    def netns(self) -> str:
        return self.space.path


NewCapsule = Callable[..., Awaitable[Capsule]]


def nft(*args: str) -> str:
    result = subprocess.run(["nft", *args], capture_output=True, text=True, timeout=10, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"nft {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def table_contents(networks: CapsuleNetworks) -> TableContents:
    return TableContents.from_json(json.loads(nft("-j", "list", "table", "inet", networks.table.name)))


def host_interfaces() -> set[str]:
    return {link["ifname"] for link in json.loads(ip("-j", "link", "show"))}


def other_host_addresses() -> list[str]:
    """The host's IPv4 addresses beside loopback: its own interfaces, other tests' veths."""
    addresses = []
    for link in json.loads(ip("-j", "-4", "address", "show")):
        if link["ifname"] != "lo":
            addresses += [info["local"] for info in link.get("addr_info", ())]
    return addresses


async def reach(
    capsule: Capsule,
    address: object,
    port: int,
    within: float = 3.0,
    scope_id: int = 0,
    source: str | None = None,
) -> Outcome:
    return await asyncio.to_thread(connect_from, capsule.netns, str(address), port, within, scope_id, source)


def write_sysctl(name: str, value: str) -> None:
    Path("/proc/sys", name).write_text(f"{value}\n")


def as_capsule_root(holder: int, *command: str) -> None:
    """`command` as root of the capsule's user namespace, in its network namespace."""
    argv = ["nsenter", f"--target={holder}", "--user", "--net", "--", *command]
    subprocess.run(argv, check=True, capture_output=True, timeout=10)


@pytest.fixture
def test_internet() -> Iterator[Internet]:
    if os.geteuid() != 0:
        pytest.skip("capsule networking needs root: test_probe_says_networking_needs_root checks the answer")
    with internet() as net:
        yield net


def networks_for(state_dir: Path, config: dict[str, object]) -> CapsuleNetworks:
    return CapsuleNetworks(state_dir, **config)  # type: ignore[arg-type]


@pytest.fixture
def network_config(tmp_path: Path, test_internet: Internet) -> dict[str, object]:
    """A pool, table and prefix of this test's own (agents on one machine each need theirs), and
    a resolv.conf naming the test internet's nameserver after a loopback one."""
    resolv = tmp_path / "resolv.conf"
    resolv.write_text(f"nameserver 127.0.0.53\nnameserver {test_internet.nameserver}\noptions edns0\n")
    tag = short_id()
    return {
        "pool": f"10.214.{secrets.randbelow(256)}.0/26",
        "table": f"wt{tag}",
        "prefix": f"wc{tag}",
        "resolv_confs": [resolv],
    }


@pytest.fixture
def networks(tmp_path: Path, network_config: dict[str, object]) -> Iterator[CapsuleNetworks]:
    networks = networks_for(tmp_path / "network", network_config)
    assert networks.probe() is None
    try:
        yield networks
    finally:
        networks.close()


@pytest.fixture
async def new_capsule(networks: CapsuleNetworks) -> AsyncIterator[NewCapsule]:
    """Attach a new namespace standing for a capsule; all removed afterwards."""
    with contextlib.ExitStack() as stack:

        async def make(policy: Policy | None = None) -> Capsule:
            space = stack.enter_context(namespace())
            sandbox_id = f"cap-{short_id()}"
            await networks.attach(sandbox_id, space.path, policy or Policy())
            link = networks.link(sandbox_id)
            assert link is not None
            return Capsule(sandbox_id, space, link)

        yield make


def test_probe_says_networking_needs_root(tmp_path: Path) -> None:
    """Without root the agent is told why capsules get no network (run as nobody when root)."""
    script = (
        "import sys; from pathlib import Path; from hostagent.network import CapsuleNetworks; "
        "print(CapsuleNetworks(Path(sys.argv[1])).probe())"
    )
    argv = [sys.executable, "-c", script, str(tmp_path / "network")]
    uid = os.geteuid()
    if uid == 0:
        argv = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--", *argv]
        uid = NOBODY
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        f"capsule networking needs root to create veth pairs and nftables rules (the agent runs as uid {uid})"
    )


async def test_the_internet_is_reachable_by_default(test_internet: Internet, new_capsule: NewCapsule) -> None:
    capsule = await new_capsule()
    with listener(test_internet.space.path, test_internet.server_address) as server:
        outcome = await reach(capsule, test_internet.server_address, port_of(server))
    assert outcome.connected, outcome


async def test_the_host_is_unreachable_on_every_address(
    test_internet: Internet, new_capsule: NewCapsule
) -> None:
    capsule = await new_capsule()
    addresses = [str(capsule.link.gateway), test_internet.host_address, *other_host_addresses()]
    with listener(None, "0.0.0.0") as server, listener(None, "127.0.0.1") as loopback:
        for address in addresses:
            outcome = await reach(capsule, address, port_of(server))
            assert outcome.refused_fast, f"the host's {address}: {outcome}"
        # 127.0.0.1 inside is the capsule's own loopback, never the host's.
        outcome = await reach(capsule, "127.0.0.1", port_of(loopback))
        assert outcome.refused_fast, f"127.0.0.1: {outcome}"
        assert not has_pending_connection(server)
        assert not has_pending_connection(loopback)


async def test_another_capsule_is_unreachable(new_capsule: NewCapsule) -> None:
    first, second = await new_capsule(), await new_capsule()
    with listener(second.netns, "0.0.0.0") as server:
        outcome = await reach(first, second.link.address, port_of(server))
        assert outcome.refused_fast, outcome
        assert not has_pending_connection(server)


async def test_private_ranges_are_refused_at_once(new_capsule: NewCapsule) -> None:
    capsule = await new_capsule()
    for address in ("10.1.2.3", "172.16.0.1", "192.168.1.1", "100.64.0.1", "169.254.169.254"):
        outcome = await reach(capsule, address, 80)
        assert outcome.refused_fast, f"{address}: {outcome}"


async def test_allow_internet_false_blocks_the_internet_and_allow_out_opens_it_again(
    test_internet: Internet, networks: CapsuleNetworks, new_capsule: NewCapsule
) -> None:
    capsule = await new_capsule(Policy(allow_internet=False))
    veth = json.loads(ip("-j", "link", "show", "dev", capsule.link.interface))[0]["ifindex"]
    with listener(test_internet.space.path, test_internet.server_address) as server:
        port = port_of(server)
        outcome = await reach(capsule, test_internet.server_address, port)
        assert outcome.refused_fast, outcome

        await networks.set_policy(
            capsule.sandbox_id,
            Policy(allow_internet=False, allow_out=(f"{test_internet.server_address}/32",)),
        )
        outcome = await reach(capsule, test_internet.server_address, port)
        assert outcome.connected, outcome

        await networks.set_policy(capsule.sandbox_id, Policy(allow_internet=False))
        outcome = await reach(capsule, test_internet.server_address, port)
        assert outcome.refused_fast, outcome
    # The same veth all along: a new policy is not a new attachment.
    assert json.loads(ip("-j", "link", "show", "dev", capsule.link.interface))[0]["ifindex"] == veth


async def test_deny_out_blocks_inside_the_internet_and_allow_out_wins(
    test_internet: Internet, networks: CapsuleNetworks, new_capsule: NewCapsule
) -> None:
    capsule = await new_capsule(Policy(deny_out=(f"{test_internet.server_address}/32",)))
    with listener(test_internet.space.path, test_internet.server_address) as server:
        port = port_of(server)
        outcome = await reach(capsule, test_internet.server_address, port)
        assert outcome.refused_fast, outcome

        both = Policy(deny_out=("203.0.113.0/24",), allow_out=(f"{test_internet.server_address}/32",))
        await networks.set_policy(capsule.sandbox_id, both)
        outcome = await reach(capsule, test_internet.server_address, port)
        assert outcome.connected, outcome


async def test_the_hosts_nameserver_answers_on_port_53_only(
    test_internet: Internet, new_capsule: NewCapsule
) -> None:
    capsule = await new_capsule(Policy(allow_internet=False))
    space, nameserver = test_internet.space.path, test_internet.nameserver
    with (
        listener(space, nameserver, 53) as dns_tcp,
        listener(space, nameserver, 53, socket.SOCK_DGRAM) as dns_udp,
        listener(space, nameserver) as other,
    ):
        outcome = await reach(capsule, nameserver, 53)
        assert outcome.connected, outcome
        await asyncio.to_thread(send_datagram_from, capsule.netns, nameserver, 53, b"query")
        assert await asyncio.to_thread(receive_datagram, dns_udp, 5.0) == b"query"
        outcome = await reach(capsule, nameserver, port_of(other))
        assert outcome.refused_fast, outcome
        assert has_pending_connection(dns_tcp)


async def test_a_capsule_that_changes_its_address_reaches_nothing(
    test_internet: Internet, new_capsule: NewCapsule
) -> None:
    capsule, other = await new_capsule(), await new_capsule()
    gateway = str(capsule.link.gateway)
    server_address = test_internet.server_address

    def readdress(address: str) -> None:
        """What root inside the capsule may do: its own namespace, its own addresses and routes."""
        capsule.space.ip("address", "flush", "dev", "eth0")
        capsule.space.ip("address", "add", f"{address}/32", "dev", "eth0")
        capsule.space.ip("route", "add", f"{gateway}/32", "dev", "eth0")
        capsule.space.ip("route", "add", "default", "via", gateway, "dev", "eth0")

    async def nothing_arrives(source: str | None = None) -> None:
        await asyncio.to_thread(send_datagram_from, capsule.netns, server_address, port, b"spoofed", source)
        outcome = await reach(capsule, server_address, port, within=NOT_THROUGH, source=source)
        assert not outcome.connected, f"from {source}: {outcome}"
        assert not has_pending_connection(server), f"a connection from {source}"
        # The datagram went out before the connection's second of waiting.
        assert await asyncio.to_thread(receive_datagram, datagrams, 0.1) is None, f"from {source}"

    with (
        listener(test_internet.space.path, server_address) as server,
        listener(test_internet.space.path, server_address, port_of(server), socket.SOCK_DGRAM) as datagrams,
    ):
        port = port_of(server)
        for spoofed in (str(other.link.address), "198.51.100.7"):
            readdress(spoofed)
            await nothing_arrives()
        # A second address beside its own: only the own one gets out.
        readdress(str(capsule.link.address))
        capsule.space.ip("address", "add", "198.51.100.8/32", "dev", "eth0")
        await nothing_arrives(source="198.51.100.8")
        await asyncio.to_thread(send_datagram_from, capsule.netns, server_address, port, b"genuine")
        assert await asyncio.to_thread(receive_datagram, datagrams, 5.0) == b"genuine"
        outcome = await reach(capsule, server_address, port)
        assert outcome.connected, f"with its own address again: {outcome}"


async def test_nothing_outside_opens_a_connection_into_a_capsule(
    test_internet: Internet, networks: CapsuleNetworks, new_capsule: NewCapsule
) -> None:
    capsule = await new_capsule()
    test_internet.space.ip("route", "add", str(networks.pool), "via", test_internet.host_address)
    with listener(capsule.netns, "0.0.0.0") as server:
        outcome = await asyncio.to_thread(
            connect_from, test_internet.space.path, str(capsule.link.address), port_of(server), NOT_THROUGH
        )
        assert not outcome.connected, outcome
        assert not has_pending_connection(server)


async def test_the_host_itself_may_connect_into_a_capsule(new_capsule: NewCapsule) -> None:
    capsule = await new_capsule()
    with listener(capsule.netns, "0.0.0.0") as server:
        with socket.create_connection((str(capsule.link.address), port_of(server)), timeout=5):
            pass
        assert has_pending_connection(server)


def test_the_probe_refuses_a_pool_that_holds_a_route_of_the_hosts(networks: CapsuleNetworks) -> None:
    veth = f"wtd{short_id()}"
    inside_pool = f"{networks.pool.network_address + 16}/28"
    ip("link", "add", veth, "type", "veth", "peer", "name", f"{veth}p")
    try:
        ip("link", "set", veth, "up")
        ip("route", "add", inside_pool, "dev", veth)
        assert networks.probe() == (
            f"the capsule address pool {networks.pool} overlaps the host's route to {inside_pool} "
            f"(dev {veth}): choose another pool"
        )
    finally:
        ip("link", "del", veth)


async def test_ipv6_from_a_capsule_reaches_nothing_even_on_link(
    networks: CapsuleNetworks, new_capsule: NewCapsule
) -> None:
    """The host's end of the veth has no IPv6; turned back on, the filter still drops it all."""
    capsule = await new_capsule()
    write_sysctl(f"net/ipv6/conf/{capsule.link.interface}/disable_ipv6", "0")
    ip("-6", "address", "add", "fe80::1/64", "dev", capsule.link.interface, "nodad")
    capsule.space.ip("-6", "address", "add", "fe80::2/64", "dev", "eth0", "nodad")
    scope = json.loads(capsule.space.ip("-j", "link", "show", "dev", "eth0"))[0]["ifindex"]
    with listener(None, "::") as server:
        outcome = await reach(capsule, "fe80::1", port_of(server), within=NOT_THROUGH, scope_id=scope)
        assert not outcome.connected, outcome
        assert not has_pending_connection(server)
        # The filter is what stopped it: without the table the connection goes through.
        nft("delete", "table", "inet", networks.table.name)
        outcome = await reach(capsule, "fe80::1", port_of(server), scope_id=scope)
        assert outcome.connected, f"without the filter: {outcome}"
        await networks.restore()
        outcome = await reach(capsule, "fe80::1", port_of(server), within=NOT_THROUGH, scope_id=scope)
        assert not outcome.connected, f"restored: {outcome}"


async def test_restore_brings_the_filter_back_after_the_table_is_gone(
    networks: CapsuleNetworks, new_capsule: NewCapsule
) -> None:
    capsule = await new_capsule()
    with listener(None, "0.0.0.0") as server:
        nft("delete", "table", "inet", networks.table.name)  # as `nft flush ruleset` would
        outcome = await reach(capsule, capsule.link.gateway, port_of(server))
        assert outcome.connected, f"without the table the host is open: {outcome}"
        await networks.restore()
        outcome = await reach(capsule, capsule.link.gateway, port_of(server))
        assert outcome.refused_fast, outcome


async def test_detach_removes_everything_and_the_capsule_can_attach_again(
    test_internet: Internet, tmp_path: Path, networks: CapsuleNetworks, new_capsule: NewCapsule
) -> None:
    capsule = await new_capsule()
    await networks.detach(capsule.sandbox_id)

    assert capsule.link.interface not in host_interfaces()
    assert "eth0" not in {link["ifname"] for link in json.loads(capsule.space.ip("-j", "link", "show"))}
    contents = table_contents(networks)
    assert capsule.link.chain not in contents.chains
    assert capsule.link.interface not in contents.hooked | contents.listed
    assert not (tmp_path / "network" / f"{capsule.sandbox_id}.json").exists()
    assert networks.link(capsule.sandbox_id) is None
    await networks.detach(capsule.sandbox_id)  # again: nothing to do, no error

    await networks.attach(capsule.sandbox_id, capsule.netns, Policy())
    with listener(test_internet.space.path, test_internet.server_address) as server:
        outcome = await reach(capsule, test_internet.server_address, port_of(server))
    assert outcome.connected, outcome


async def test_a_crashed_runs_leftovers_are_cleaned_and_kept_capsules_restored(
    test_internet: Internet,
    tmp_path: Path,
    network_config: dict[str, object],
    networks: CapsuleNetworks,
    new_capsule: NewCapsule,
) -> None:
    kept, lost, crashed = await new_capsule(), await new_capsule(), await new_capsule()
    # The agent dies without a word; its record of `lost` went with it.
    (tmp_path / "network" / f"{lost.sandbox_id}.json").unlink()
    restarted = networks_for(tmp_path / "network", network_config)

    assert set(restarted.attachments()) == {kept.sandbox_id, crashed.sandbox_id}
    assert await restarted.clean_leftovers(keep={kept.sandbox_id}) == [crashed.sandbox_id]
    contents = table_contents(restarted)
    for gone in (lost, crashed):
        assert gone.link.interface not in host_interfaces()
        assert gone.link.chain not in contents.chains
        assert gone.link.interface not in contents.hooked | contents.listed
    assert set(restarted.attachments()) == {kept.sandbox_id}

    await restarted.restore()
    with (
        listener(test_internet.space.path, test_internet.server_address) as server,
        listener(None, "0.0.0.0") as host,
    ):
        assert (await reach(kept, test_internet.server_address, port_of(server))).connected
        assert (await reach(kept, kept.link.gateway, port_of(host))).refused_fast
    # A new capsule takes a freed slot, not the kept one's.
    newcomer = await new_capsule()
    assert newcomer.link.interface != kept.link.interface


@pytest.fixture
def holder() -> Iterator[int]:
    """A process in a user namespace of its own and a network namespace that user namespace owns,
    as runc makes a capsule's."""
    process = subprocess.Popen(["unshare", "--user", "--map-root-user", "--net", "--", "sleep", "60"])
    try:
        yield process.pid
    finally:
        process.kill()
        process.wait()


async def test_a_namespace_of_a_user_namespace_as_runc_makes_it(
    test_internet: Internet, networks: CapsuleNetworks, holder: int
) -> None:
    """The capsule's namespace belongs to its own user namespace, whose root may do anything to its
    network, and its rules included, without lifting the policy."""
    netns = f"/proc/{holder}/ns/net"
    await wait_until(lambda: os.readlink(netns) != os.readlink("/proc/self/ns/net"))
    await networks.attach("cap-holder", netns, Policy())
    link = networks.link("cap-holder")
    assert link is not None
    as_capsule_root(holder, "nft", "flush", "ruleset")
    as_capsule_root(holder, "ip", "route", "replace", "default", "via", str(link.gateway), "metric", "5")
    with (
        listener(test_internet.space.path, test_internet.server_address) as server,
        listener(None, "0.0.0.0") as host,
    ):
        outcome = await asyncio.to_thread(connect_from, netns, test_internet.server_address, port_of(server))
        assert outcome.connected, outcome
        outcome = await asyncio.to_thread(connect_from, netns, str(link.gateway), port_of(host))
        assert outcome.refused_fast, outcome
    await networks.detach("cap-holder")
