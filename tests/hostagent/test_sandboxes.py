"""Sandbox lifecycle: create, list, destroy, and survival across an agent restart."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from protos import hostagent_pb2 as pb
from protos import hostagent_pb2_grpc as pb_grpc
from tests.hostagent.conftest import capsule_dir, new_sandbox_id, writable_dir
from tests.support.hostagent import HostAgentProcess, start_hostagent, start_terminal

pytestmark = pytest.mark.timeout(60)


async def _listed(stub: Any) -> dict[str, Any]:
    response = await stub.ListSandboxes(pb.ListSandboxesRequest(), timeout=30)
    return {sandbox.sandbox_id: sandbox for sandbox in response.sandboxes}


async def test_create_makes_home_and_tmp(stub: Any, agent: HostAgentProcess) -> None:
    sandbox_id = new_sandbox_id()
    response = await stub.CreateSandbox(pb.CreateSandboxRequest(sandbox_id=sandbox_id))
    assert response.sandbox.sandbox_id == sandbox_id
    assert (writable_dir(agent, sandbox_id, "home")).is_dir()
    assert (writable_dir(agent, sandbox_id, "tmp")).is_dir()


async def test_create_is_idempotent(stub: Any, agent: HostAgentProcess, capsule: str) -> None:
    (writable_dir(agent, capsule, "home") / "kept").write_text("still here")
    response = await stub.CreateSandbox(pb.CreateSandboxRequest(sandbox_id=capsule))
    assert response.sandbox.sandbox_id == capsule
    assert (writable_dir(agent, capsule, "home") / "kept").read_text() == "still here"


async def test_list_names_the_runtime_and_counts_live_sessions(
    stub: Any, agent: HostAgentProcess, capsule: str
) -> None:
    assert (await _listed(stub))[capsule].pty_sessions == 0
    terminal, _ = await start_terminal(stub, capsule, "/bin/cat")
    listed = (await _listed(stub))[capsule]
    assert (listed.runtime, listed.pty_sessions) == (agent.runtime, 1)
    await terminal.kill()
    await terminal.wait_exit()
    assert (await _listed(stub))[capsule].pty_sessions == 0


async def test_destroy_kills_sessions_and_removes_the_directory(
    stub: Any, agent: HostAgentProcess, capsule: str
) -> None:
    terminal, _ = await start_terminal(stub, capsule, "/bin/cat")
    await stub.DestroySandbox(pb.DestroySandboxRequest(sandbox_id=capsule), timeout=30)
    assert await terminal.wait_exit() == 137
    assert not capsule_dir(agent, capsule).exists()
    assert capsule not in await _listed(stub)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await terminal.kill()
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.fixture
async def restartable_agent(tmp_path: Path) -> AsyncIterator[tuple[Path, HostAgentProcess]]:
    agent = start_hostagent(tmp_path / "agent", runtime="process")
    yield tmp_path / "agent", agent
    agent.stop()


async def test_sandboxes_survive_an_agent_restart(restartable_agent: tuple[Path, HostAgentProcess]) -> None:
    data_dir, agent = restartable_agent
    async with grpc.aio.insecure_channel(agent.address) as channel:
        await pb_grpc.HostAgentStub(channel).CreateSandbox(pb.CreateSandboxRequest(sandbox_id="survivor"))
    agent.stop()
    restarted = start_hostagent(data_dir, runtime="process")
    try:
        async with grpc.aio.insecure_channel(restarted.address) as channel:
            assert "survivor" in await _listed(pb_grpc.HostAgentStub(channel))
    finally:
        restarted.stop()
