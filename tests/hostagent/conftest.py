"""Fixtures for host-agent tests: real agents (one per runtime, shared), a grpc.aio stub, capsules."""

from __future__ import annotations

import contextlib
import shutil
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from protos import hostagent_pb2 as pb
from protos import hostagent_pb2_grpc as pb_grpc
from tests.support.hostagent import HostAgentProcess, start_hostagent

needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")
RUNTIMES = ["process", pytest.param("bwrap", marks=needs_bwrap), "oci"]

AgentFactory = Callable[[str], HostAgentProcess]


@pytest.fixture(scope="session")
def agent_for_runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentFactory]:
    """Start at most one agent per runtime for the whole run."""
    agents: dict[str, HostAgentProcess] = {}

    def get(runtime: str) -> HostAgentProcess:
        if runtime not in agents:
            agents[runtime] = start_hostagent(tmp_path_factory.mktemp(f"agent-{runtime}"), runtime=runtime)
        return agents[runtime]

    yield get
    for agent in agents.values():
        agent.stop()


@pytest.fixture(params=RUNTIMES)
def agent(request: pytest.FixtureRequest, agent_for_runtime: AgentFactory) -> HostAgentProcess:
    runtime: str = request.param
    return agent_for_runtime(runtime)


@pytest.fixture
def bwrap_agent(agent_for_runtime: AgentFactory) -> HostAgentProcess:
    if shutil.which("bwrap") is None:
        pytest.skip("bubblewrap is not installed")
    return agent_for_runtime("bwrap")


async def _stub(agent: HostAgentProcess) -> AsyncIterator[Any]:
    async with grpc.aio.insecure_channel(agent.address) as channel:
        yield pb_grpc.HostAgentStub(channel)


@pytest.fixture
async def stub(agent: HostAgentProcess) -> AsyncIterator[Any]:
    async for value in _stub(agent):
        yield value


@pytest.fixture
async def bwrap_stub(bwrap_agent: HostAgentProcess) -> AsyncIterator[Any]:
    async for value in _stub(bwrap_agent):
        yield value


def new_sandbox_id() -> str:
    return f"cap-{uuid.uuid4().hex[:12]}"


async def _capsule(stub: Any) -> AsyncIterator[str]:
    sandbox_id = new_sandbox_id()
    await stub.CreateSandbox(pb.CreateSandboxRequest(sandbox_id=sandbox_id), timeout=30)
    yield sandbox_id
    with contextlib.suppress(grpc.aio.AioRpcError):
        await stub.DestroySandbox(pb.DestroySandboxRequest(sandbox_id=sandbox_id), timeout=30)


@pytest.fixture
async def capsule(stub: Any) -> AsyncIterator[str]:
    async for value in _capsule(stub):
        yield value


@pytest.fixture
async def other_capsule(stub: Any) -> AsyncIterator[str]:
    async for value in _capsule(stub):
        yield value


@pytest.fixture
async def bwrap_capsule(bwrap_stub: Any) -> AsyncIterator[str]:
    async for value in _capsule(bwrap_stub):
        yield value


@pytest.fixture
async def other_bwrap_capsule(bwrap_stub: Any) -> AsyncIterator[str]:
    async for value in _capsule(bwrap_stub):
        yield value


def capsule_dir(agent: HostAgentProcess, sandbox_id: str) -> Path:
    return agent.data_dir / "sandboxes" / sandbox_id


def writable_dir(agent: HostAgentProcess, sandbox_id: str, name: str) -> Path:
    """The host directory behind the capsule's home ("home") or /tmp ("tmp").

    Under the OCI runtime both live on the capsule's own disk, mounted at `disk/`.
    """
    root = capsule_dir(agent, sandbox_id)
    return root / "disk" / name if agent.runtime == "oci" else root / name
