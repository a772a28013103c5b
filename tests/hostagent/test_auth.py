"""With a token configured, the agent answers only calls that carry it (capsules share its network)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from protos import hostagent_pb2 as pb
from protos import hostagent_pb2_grpc as pb_grpc
from tests.support.hostagent import HostAgentProcess, start_hostagent, token_metadata

TOKEN = secrets.token_hex(16)


@pytest.fixture(scope="module")
def guarded_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostAgentProcess]:
    agent = start_hostagent(Path(tmp_path_factory.mktemp("guarded")), token=TOKEN)
    try:
        yield agent
    finally:
        agent.stop()


@pytest.mark.parametrize("metadata", [(), token_metadata("wrong"), (("authorization", TOKEN),)])
async def test_calls_without_the_token_are_refused(
    guarded_agent: HostAgentProcess, metadata: tuple[tuple[str, str], ...]
) -> None:
    async with grpc.aio.insecure_channel(guarded_agent.address) as channel:
        stub = pb_grpc.HostAgentStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as unary:
            await stub.ListSandboxes(pb.ListSandboxesRequest(), metadata=metadata, timeout=10)
        call = stub.PtyAttach(pb.PtyAttachRequest(sandbox_id="cl-x", tag="pty-1"), metadata=metadata)
        with pytest.raises(grpc.aio.AioRpcError) as stream:
            await call.read()

        async def send_input() -> None:  # on the input stream, never half-closed
            inputs = stub.PtyInput(None, metadata=metadata, timeout=10)
            await inputs.write(pb.PtyInputRequest(sandbox_id="cl-x", tag="pty-1", data=b"x"))
            await inputs.read()

        with pytest.raises(grpc.aio.AioRpcError) as both_ways:
            await send_input()
    for error in (unary.value, stream.value, both_ways.value):
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        assert error.details() == "missing or wrong host-agent token"


async def test_calls_with_the_token_are_served(guarded_agent: HostAgentProcess) -> None:
    async with grpc.aio.insecure_channel(guarded_agent.address) as channel:
        stub = pb_grpc.HostAgentStub(channel)
        created = await stub.CreateSandbox(
            pb.CreateSandboxRequest(sandbox_id="cl-guarded"), metadata=token_metadata(TOKEN), timeout=10
        )
    assert created.sandbox.sandbox_id == "cl-guarded"


def test_an_agent_without_a_token_warns(agent: HostAgentProcess) -> None:
    assert "no HOSTAGENT_TOKEN" in agent.log()


async def test_file_calls_without_the_token_are_refused(guarded_agent: HostAgentProcess) -> None:
    """Every kind of file call: unary, streamed out (ReadFile) and streamed in (WriteFile)."""
    async with grpc.aio.insecure_channel(guarded_agent.address) as channel:
        stub = pb_grpc.HostAgentStub(channel)
        path = pb.FilePathRequest(sandbox_id="cl-x", path="/root")
        with pytest.raises(grpc.aio.AioRpcError) as listing:
            await stub.ListDir(pb.ListDirRequest(sandbox_id="cl-x", path="/root"), timeout=10)
        with pytest.raises(grpc.aio.AioRpcError) as reading:
            await stub.ReadFile(path, timeout=10).read()
        write = stub.WriteFile(None, timeout=10)
        await write.write(pb.WriteFileRequest(start=pb.WriteFileStart(sandbox_id="cl-x", path="/root/x")))
        with pytest.raises(grpc.aio.AioRpcError) as writing:
            await write
    for error in (listing.value, reading.value, writing.value):
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
