"""PortForward, the byte stream behind previews: it reaches a server inside an OCI capsule's own
network, never the host's loopback (where the agent, Redis and PostgreSQL listen), and says why
when it cannot connect.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from hostagent.ports import REFUSED_KEY
from protos import hostagent_pb2 as pb
from protos import hostagent_pb2_grpc as pb_grpc
from tests.hostagent.conftest import AgentFactory, CapsuleFactory
from tests.support.hostagent import (
    HostAgentProcess,
    Terminal,
    start_hostagent,
    start_terminal,
    token_metadata,
)

pytestmark = pytest.mark.timeout(120)

SERVER_PORT = 8080
HOST_SERVICES = {"redis": 6379, "postgresql": 5432}


async def serve_http(stub: Any, capsule: str, port: int = SERVER_PORT) -> Terminal:
    """`python3 -m http.server` on the capsule's loopback, up once it says so."""
    terminal, _ = await start_terminal(
        stub, capsule, "/usr/bin/python3", "-m", "http.server", str(port), "--bind", "127.0.0.1"
    )
    await terminal.expect(b"Serving HTTP")
    return terminal


async def exchange(stub: Any, capsule: str, port: int, data: bytes) -> bytes:
    """Connect, send `data`, half-close, and read until the server's EOF."""
    call = stub.PortForward(timeout=60)
    await call.write(pb.PortForwardRequest(sandbox_id=capsule, port=port))
    first = await call.read()
    assert first.connected, first
    await call.write(pb.PortForwardRequest(data=data))
    await call.write(pb.PortForwardRequest(close_write=True))
    await call.done_writing()
    received = bytearray()
    while True:
        response = await call.read()
        assert response is not grpc.aio.EOF, "the stream ended before the server's eof"  # type: ignore[attr-defined]
        if response.eof:
            break
        received += response.data
    assert await call.code() == grpc.StatusCode.OK
    return bytes(received)


async def refusal(stub: Any, capsule: str, port: int) -> grpc.aio.AioRpcError:
    call = stub.PortForward(timeout=60)
    await call.write(pb.PortForwardRequest(sandbox_id=capsule, port=port))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call.read()
    return caught.value


async def test_a_server_inside_the_capsule_is_reached(oci_stub: Any, oci_capsules: CapsuleFactory) -> None:
    capsule = await oci_capsules()
    server = await serve_http(oci_stub, capsule)
    reply = await exchange(oci_stub, capsule, SERVER_PORT, b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
    assert reply.startswith(b"HTTP/1.0 200"), reply[:200]
    assert b"Directory listing" in reply
    await server.kill()


async def test_a_large_body_goes_both_ways_intact(oci_stub: Any, oci_capsules: CapsuleFactory) -> None:
    capsule = await oci_capsules()
    # An echo server: what it reads until EOF, it writes back.
    echo = (
        "import socket\n"
        "s = socket.create_server(('127.0.0.1', 9000))\n"
        "print('listening', flush=True)\n"
        "c, _ = s.accept()\n"
        "while data := c.recv(65536):\n"
        "    c.sendall(data)\n"
        "c.shutdown(socket.SHUT_WR)\n"
    )
    server, _ = await start_terminal(oci_stub, capsule, "/usr/bin/python3", "-c", echo)
    await server.expect(b"listening")
    payload = bytes(range(256)) * 12 * 1024  # 3 MiB
    call = oci_stub.PortForward(timeout=60)
    await call.write(pb.PortForwardRequest(sandbox_id=capsule, port=9000))
    assert (await call.read()).connected

    async def send() -> None:
        for start in range(0, len(payload), 60_000):
            await call.write(pb.PortForwardRequest(data=payload[start : start + 60_000]))
        await call.write(pb.PortForwardRequest(close_write=True))
        await call.done_writing()

    async def receive() -> bytes:
        received = bytearray()
        while not (response := await call.read()).eof:
            received += response.data
        return bytes(received)

    _, received = await asyncio.gather(send(), receive())
    assert received == payload
    assert await server.wait_exit() == 0


@pytest.mark.parametrize("service", ["agent", *HOST_SERVICES])
async def test_the_hosts_own_services_are_out_of_reach(
    oci_stub: Any, oci_agent: HostAgentProcess, oci_capsules: CapsuleFactory, service: str
) -> None:
    # They listen on the host's loopback; the capsule's loopback is its own, with nothing there.
    port = int(oci_agent.address.rsplit(":", 1)[1]) if service == "agent" else HOST_SERVICES[service]
    error = await refusal(oci_stub, await oci_capsules(), port)
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert f"nothing is listening on port {port}" in (error.details() or "")
    assert (REFUSED_KEY, "1") in list(error.trailing_metadata() or ())


async def test_a_closed_port_says_nothing_listens(oci_stub: Any, oci_capsules: CapsuleFactory) -> None:
    capsule = await oci_capsules()
    error = await refusal(oci_stub, capsule, 3000)
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert error.details() == f"nothing is listening on port 3000 of capsule {capsule} (connection refused)"


async def test_an_unknown_capsule_is_not_found(oci_stub: Any) -> None:
    error = await refusal(oci_stub, "cap-nonexistent", 3000)
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details() == "sandbox cap-nonexistent not found on this host"


@pytest.mark.parametrize("port", [0, 65536])
async def test_a_port_out_of_range_is_invalid(oci_stub: Any, oci_capsules: CapsuleFactory, port: int) -> None:
    error = await refusal(oci_stub, await oci_capsules(), port)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == f"port must be between 1 and 65535, got {port}"


async def test_a_paused_capsule_refuses(oci_stub: Any, oci_capsules: CapsuleFactory) -> None:
    capsule = await oci_capsules()
    await oci_stub.PauseSandbox(pb.PauseSandboxRequest(sandbox_id=capsule), timeout=30)
    error = await refusal(oci_stub, capsule, SERVER_PORT)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error.details() == f"sandbox {capsule} is paused"


@pytest.fixture(params=["process", "bwrap"])
def host_network_agent(request: pytest.FixtureRequest, agent_for_runtime: AgentFactory) -> HostAgentProcess:
    """An agent whose runtime runs capsules in the host's network."""
    return agent_for_runtime(request.param)


async def test_a_runtime_in_the_hosts_network_refuses(host_network_agent: HostAgentProcess) -> None:
    # Its capsules' loopback is the host's: a preview would open the platform's own ports.
    agent, runtime = host_network_agent, host_network_agent.runtime
    async with grpc.aio.insecure_channel(agent.address) as channel:
        stub = pb_grpc.HostAgentStub(channel)
        capsule = "cap-hostnet"
        await stub.CreateSandbox(pb.CreateSandboxRequest(sandbox_id=capsule), timeout=30)
        try:
            error = await refusal(stub, capsule, int(agent.address.rsplit(":", 1)[1]))
        finally:
            await stub.DestroySandbox(pb.DestroySandboxRequest(sandbox_id=capsule), timeout=30)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "previews need a capsule with a network of its own" in (error.details() or "")
    assert f"the {runtime} runtime runs capsules in the host's network" in (error.details() or "")


async def test_the_first_request_may_carry_data_and_the_half_close(
    oci_stub: Any, oci_capsules: CapsuleFactory
) -> None:
    capsule = await oci_capsules()
    server = await serve_http(oci_stub, capsule)
    call = oci_stub.PortForward(timeout=60)
    request = b"GET / HTTP/1.0\r\nHost: x\r\n\r\n"
    await call.write(
        pb.PortForwardRequest(sandbox_id=capsule, port=SERVER_PORT, data=request, close_write=True)
    )
    await call.done_writing()
    assert (await call.read()).connected
    received = bytearray()
    while not (response := await call.read()).eof:
        received += response.data
    assert bytes(received).startswith(b"HTTP/1.0 200")
    await server.kill()


@pytest.fixture(scope="module")
def guarded_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostAgentProcess]:
    agent = start_hostagent(Path(tmp_path_factory.mktemp("guarded")), token=secrets.token_hex(16))
    try:
        yield agent
    finally:
        agent.stop()


@pytest.mark.parametrize("metadata", [(), token_metadata("wrong")])
async def test_a_call_without_the_token_is_refused(
    guarded_agent: HostAgentProcess, metadata: tuple[tuple[str, str], ...]
) -> None:
    async with grpc.aio.insecure_channel(guarded_agent.address) as channel:
        call = pb_grpc.HostAgentStub(channel).PortForward(None, metadata=metadata, timeout=30)
        await call.write(pb.PortForwardRequest(sandbox_id="cap-any", port=3000))
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call.read()
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert refused.value.details() == "missing or wrong host-agent token"
