"""A real OCI capsule's network, tried from inside it: the platform and other capsules are out of
reach and fail fast, a test "internet" (a namespace on this machine) is reachable by default,
and the policy (allow_internet, allow_out, deny_out) changes on a running capsule at once.
"""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from protos import hostagent_pb2 as pb
from protos import hostagent_pb2_grpc as pb_grpc
from tests.hostagent.conftest import CapsuleFactory
from tests.support.hostagent import HostAgentProcess, start_hostagent, start_terminal
from tests.support.netns import Internet, internet, listener, port_of

pytestmark = pytest.mark.timeout(120)
# ip and nft build the test internet and list the host's addresses: processes beyond the agent.
beyond_the_agent = pytest.mark.stack

# Tries each host:port from inside the capsule, with a 5 s timeout: prints "open", or the
# error's name, and how long it took in ms.
PROBE = """
import errno, socket, sys, time
for target in sys.argv[1:]:
    host, port = target.rsplit(":", 1)
    started = time.monotonic()
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
        result = "open"
    except OSError as exc:
        result = errno.errorcode.get(exc.errno, "timeout") if exc.errno else "timeout"
    print(target, result, round((time.monotonic() - started) * 1000))
"""


async def _probe(stub: Any, capsule: str, *targets: str) -> dict[str, tuple[str, int]]:
    terminal, _ = await start_terminal(stub, capsule, "/usr/bin/python3", "-c", PROBE, *targets)
    assert await terminal.wait_exit(60) == 0, terminal.output
    results = {}
    for line in terminal.output.decode().split("\r\n"):
        if line.strip():
            target, result, millis = line.split()
            results[target] = (result, int(millis))
    return results


def _host_addresses() -> list[str]:
    """Every IPv4 address of the host, loopback included."""
    addresses = ["127.0.0.1"]
    with contextlib.suppress(OSError):
        for entry in json.loads(_ip_json("-4", "address")):
            addresses += [a["local"] for a in entry.get("addr_info", []) if a.get("local")]
    return sorted(set(addresses))


def _ip_json(*args: str) -> str:
    import subprocess

    return subprocess.run(
        ["ip", "-json", *args], capture_output=True, text=True, check=True, timeout=10
    ).stdout


@pytest.fixture
def the_internet() -> Iterator[tuple[Internet, socket.socket]]:
    with internet() as net:
        server = listener(net.space.path, net.server_address)
        try:
            yield net, server
        finally:
            server.close()


def _refused_fast(result: tuple[str, int]) -> bool:
    return (
        result[0] in ("ECONNREFUSED", "EHOSTUNREACH", "ENETUNREACH", "EACCES", "EPERM") and result[1] < 1000
    )


@beyond_the_agent
async def test_the_platform_is_unreachable_from_a_capsule_and_fails_fast(
    oci_stub: Any, oci_agent: HostAgentProcess, oci_capsules: CapsuleFactory
) -> None:
    capsule = await oci_capsules()
    # A listener on every host address stands for daphne; Redis, PostgreSQL and the agent are
    # the real ones, on 127.0.0.1 of the host.
    daphne = socket.create_server(("0.0.0.0", 0))
    try:
        agent_port = oci_agent.address.rsplit(":", 1)[1]
        targets = [f"127.0.0.1:{port}" for port in (6379, 5432, agent_port)]
        targets += [f"{address}:{port_of(daphne)}" for address in _host_addresses()]
        targets += [f"{address}:{port}" for address in _host_addresses() for port in (6379, 5432)]
        results = await _probe(oci_stub, capsule, *targets)
        assert set(results) == set(targets)
        for target, result in results.items():
            assert _refused_fast(result), f"{target}: {result}"
        # Not even a policy that names the host's addresses opens them (allow wins over deny,
        # never over the platform).
        opened = [f"{address}/32" for address in _host_addresses() if not address.startswith("127.")]
        request = pb.SetNetworkPolicyRequest(
            sandbox_id=capsule, network=pb.NetworkPolicy(allow_internet=True, allow_out=opened)
        )
        await oci_stub.SetNetworkPolicy(request, timeout=30)
        results = await _probe(oci_stub, capsule, *targets)
        for target, result in results.items():
            assert _refused_fast(result), f"{target} with allow_out {opened}: {result}"
    finally:
        daphne.close()


async def test_another_capsules_listening_port_is_unreachable(
    oci_stub: Any, oci_capsules: CapsuleFactory
) -> None:
    first, second = await oci_capsules(), await oci_capsules()
    # Even with the whole private range allowed: other capsules are other tenants.
    open_private = pb.NetworkPolicy(allow_internet=True, allow_out=["10.0.0.0/8"])
    await oci_stub.SetNetworkPolicy(
        pb.SetNetworkPolicyRequest(sandbox_id=first, network=open_private), timeout=30
    )
    server, _ = await start_terminal(
        oci_stub,
        second,
        "/bin/bash",
        "-c",
        "ip -4 -o addr show eth0 | awk '{print \"addr=\" $4}'; exec python3 -m http.server 8124",
    )
    await server.expect(b"Serving HTTP")
    address = server.output.decode().split("addr=", 1)[1].split("/", 1)[0]
    results = await _probe(oci_stub, first, f"{address}:8124")
    assert _refused_fast(results[f"{address}:8124"]), results
    # The server is up: from inside its own capsule it answers.
    own = await _probe(oci_stub, second, "127.0.0.1:8124", f"{address}:8124")
    assert [result for result, _ms in own.values()] == ["open", "open"]


@beyond_the_agent
async def test_the_internet_follows_the_policy_without_a_restart(
    oci_stub: Any, oci_capsules: CapsuleFactory, the_internet: tuple[Internet, socket.socket]
) -> None:
    net, server = the_internet
    target = f"{net.server_address}:{port_of(server)}"
    capsule = await oci_capsules()
    assert (await _probe(oci_stub, capsule, target))[target][0] == "open"

    async def set_policy(**fields: Any) -> None:
        request = pb.SetNetworkPolicyRequest(sandbox_id=capsule, network=pb.NetworkPolicy(**fields))
        await oci_stub.SetNetworkPolicy(request, timeout=30)

    await set_policy(allow_internet=False)
    assert _refused_fast((await _probe(oci_stub, capsule, target))[target])
    await set_policy(allow_internet=False, allow_out=[f"{net.server_address}/32"])
    assert (await _probe(oci_stub, capsule, target))[target][0] == "open"
    await set_policy(allow_internet=True, deny_out=[f"{net.server_address}/32"])
    assert _refused_fast((await _probe(oci_stub, capsule, target))[target])
    # Allow wins over deny.
    await set_policy(allow_internet=True, allow_out=[f"{net.server_address}/32"], deny_out=["203.0.113.0/24"])
    assert (await _probe(oci_stub, capsule, target))[target][0] == "open"


@beyond_the_agent
async def test_a_capsule_created_without_the_internet_cannot_reach_it(
    oci_stub: Any, oci_capsules: CapsuleFactory, the_internet: tuple[Internet, socket.socket]
) -> None:
    net, server = the_internet
    target = f"{net.server_address}:{port_of(server)}"
    capsule = await oci_capsules(network=pb.NetworkPolicy(allow_internet=False))
    assert _refused_fast((await _probe(oci_stub, capsule, target))[target])


@beyond_the_agent
async def test_root_inside_cannot_lift_the_policy_by_changing_its_own_network(
    oci_stub: Any, oci_capsules: CapsuleFactory, the_internet: tuple[Internet, socket.socket]
) -> None:
    net, server = the_internet
    target = f"{net.server_address}:{port_of(server)}"
    capsule = await oci_capsules(network=pb.NetworkPolicy(allow_internet=False))
    # Root inside owns its namespace: a new address, and its own firewall flushed.
    terminal, _ = await start_terminal(
        oci_stub,
        capsule,
        "/bin/bash",
        "-c",
        "ip addr add 10.214.250.9/32 dev eth0; nft flush ruleset 2>/dev/null; echo changed",
        user="root",
    )
    await terminal.wait_exit(30)
    assert b"changed" in terminal.output
    assert _refused_fast((await _probe(oci_stub, capsule, target))[target])


async def test_a_bad_policy_is_refused_before_anything_is_made(oci_stub: Any) -> None:
    request = pb.CreateSandboxRequest(
        sandbox_id="cl-bad-policy", network=pb.NetworkPolicy(allow_out=["nowhere"])
    )
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await oci_stub.CreateSandbox(request, timeout=30)
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "allow_out[0] 'nowhere' is not a CIDR" in (failure.value.details() or "")
    listing = await oci_stub.ListSandboxes(pb.ListSandboxesRequest(), timeout=30)
    assert "cl-bad-policy" not in [s.sandbox_id for s in listing.sandboxes]


@beyond_the_agent
async def test_without_capsule_networks_a_capsule_has_its_loopback_only(
    tmp_path: Path, the_internet: tuple[Internet, socket.socket]
) -> None:
    """The degraded case: runc works, veths and rules cannot be made (here: a pool that overlaps
    the host's route to the test internet). The agent says so, loudly, and its capsules still
    reach nothing of the host, and nothing else either."""
    net, server = the_internet
    agent = start_hostagent(tmp_path / "agent", runtime="oci", args=["--network-pool", "203.0.113.0/24"])
    try:
        assert "capsules get NO outbound network (the capsule address pool 203.0.113.0/24 overlaps" in (
            agent.log()
        )
        async with grpc.aio.insecure_channel(agent.address) as channel:
            stub = pb_grpc.HostAgentStub(channel)
            await stub.CreateSandbox(pb.CreateSandboxRequest(sandbox_id="cl-offline"), timeout=30)
            targets = [f"{net.server_address}:{port_of(server)}", "127.0.0.1:6379", "127.0.0.1:5432"]
            targets += [f"{address}:5432" for address in _host_addresses()]
            results = await _probe(stub, "cl-offline", *targets)
        for target, result in results.items():
            assert _refused_fast(result), f"{target}: {result}"
    finally:
        agent.stop()
