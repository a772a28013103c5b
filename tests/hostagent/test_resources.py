"""Finished sessions leave no zombie, no PTY and no pidfd behind in the agent."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from protos import hostagent_pb2 as pb
from protos import hostagent_pb2_grpc as pb_grpc
from tests.hostagent.conftest import RUNTIMES
from tests.support.hostagent import HostAgentProcess, start_hostagent, start_terminal

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(params=RUNTIMES)
async def fresh_agent(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[HostAgentProcess]:
    agent = start_hostagent(tmp_path / "agent", runtime=request.param)
    yield agent
    agent.stop()


def _terminal_fds(pid: int) -> list[str]:
    links = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            links.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            continue
    return [link for link in links if link in ("/dev/ptmx", "anon_inode:[pidfd]") or "/dev/pts/" in link]


def _zombie_children(pid: int) -> list[int]:
    zombies = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat", "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            if fields[0] == b"Z" and int(fields[1]) == pid:
                zombies.append(int(name))
    return zombies


async def test_finished_sessions_release_everything(fresh_agent: HostAgentProcess) -> None:
    async with grpc.aio.insecure_channel(fresh_agent.address) as channel:
        stub: Any = pb_grpc.HostAgentStub(channel)
        await stub.CreateSandbox(pb.CreateSandboxRequest(sandbox_id="leaks"))
        exiting, _ = await start_terminal(stub, "leaks", "/bin/sh", "-c", "echo hi")
        killed, _ = await start_terminal(stub, "leaks", "/bin/cat")
        await killed.kill()
        assert (await exiting.wait_exit(), await killed.wait_exit()) == (0, 137)
        with pytest.raises(grpc.aio.AioRpcError):
            await start_terminal(stub, "leaks", "/nope")
        assert _terminal_fds(fresh_agent.proc.pid) == []
        assert _zombie_children(fresh_agent.proc.pid) == []
