"""The control plane's keepalive pings on a terminal stream that carries nothing for a while.

The control plane pings every host agent it holds a stream to (capsules/agents.py); gRPC's
default server policy answers a client that pings more often than every five minutes without
data with GOAWAY ``too_many_pings``, which ended a terminal idle for about three minutes with
"sandbox host is not reachable".
"""

from __future__ import annotations

import asyncio
import contextlib

import grpc
import pytest

from capsules.agents import CHANNEL_OPTIONS
from protos import hostagent_pb2 as pb
from protos import hostagent_pb2_grpc as pb_grpc
from tests.hostagent.conftest import AgentFactory, new_sandbox_id
from tests.support.hostagent import HostAgentProcess, start_terminal

pytestmark = pytest.mark.timeout(60)

# As the control plane's channel, but pinging every second and without the client's own brake on
# pings without data: the strikes of gRPC's default server policy then come within seconds
# instead of minutes.
OPTIONS = [
    *(o for o in CHANNEL_OPTIONS if o[0] != "grpc.keepalive_time_ms"),
    ("grpc.keepalive_time_ms", 1000),
    ("grpc.http2.max_pings_without_data", 0),
]


@pytest.fixture
def process_agent(agent_for_runtime: AgentFactory) -> HostAgentProcess:
    return agent_for_runtime("process")  # the policy is the gRPC server's, whatever the runtime


async def test_an_idle_terminal_stream_outlives_keepalive_pings(process_agent: HostAgentProcess) -> None:
    async with grpc.aio.insecure_channel(process_agent.address, options=OPTIONS) as channel:
        stub = pb_grpc.HostAgentStub(channel)
        sandbox_id = new_sandbox_id()
        await stub.CreateSandbox(pb.CreateSandboxRequest(sandbox_id=sandbox_id), timeout=30)
        try:
            terminal, _ = await start_terminal(stub, sandbox_id, "/bin/cat")
            await asyncio.sleep(8)  # eight pings and not a byte either way
            await terminal.send(b"still-here\n")
            await terminal.expect(b"still-here\r\nstill-here\r\n")
            await terminal.kill()
        finally:
            with contextlib.suppress(grpc.aio.AioRpcError):
                await stub.DestroySandbox(pb.DestroySandboxRequest(sandbox_id=sandbox_id), timeout=30)
