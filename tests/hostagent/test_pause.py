"""Pausing a sandbox freezes its processes where they are; resuming lets them go on.

The behaviour is checked with every pause mechanism this machine offers (cgroup v2, cgroup v1,
SIGSTOP/SIGCONT) in both runtimes; the rest uses the shared agents (their automatic choice).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from protos import hostagent_pb2 as pb
from protos import hostagent_pb2_grpc as pb_grpc
from tests.hostagent.conftest import capsule_dir, needs_bwrap, new_sandbox_id
from tests.support.hostagent import HostAgentProcess, attach_terminal, start_hostagent, start_terminal
from tests.support.polling import wait_until

pytestmark = pytest.mark.timeout(60)

MECHANISMS = ("cgroup2", "cgroup1", "signals")
COMBINATIONS = [
    pytest.param(
        (runtime, mechanism), id=f"{runtime}-{mechanism}", marks=[needs_bwrap] if runtime == "bwrap" else []
    )
    for runtime in ("process", "bwrap")
    for mechanism in MECHANISMS
]
COUNTER = 'i=0; while true; do i=$((i+1)); echo "n=$i"; sleep 0.05; done'
# How long a paused counter must stay silent: a behavioural check, not a speed one.
QUIET = 1.0


@pytest.fixture(scope="module")
def mechanism_agents(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[tuple[str, str], Any]]:
    """One agent per (runtime, mechanism) for this module: an agent or the reason it cannot run."""
    agents: dict[tuple[str, str], Any] = {}
    yield agents
    for agent in agents.values():
        if isinstance(agent, HostAgentProcess):
            agent.stop()


@pytest.fixture(params=COMBINATIONS)
def pausing_agent(
    request: pytest.FixtureRequest,
    mechanism_agents: dict[tuple[str, str], Any],
    tmp_path_factory: pytest.TempPathFactory,
) -> HostAgentProcess:
    runtime, mechanism = request.param
    key = (runtime, mechanism)
    if key not in mechanism_agents:
        data_dir = tmp_path_factory.mktemp(f"agent-{runtime}-{mechanism}")
        try:
            mechanism_agents[key] = start_hostagent(
                data_dir, runtime=runtime, args=["--pause-mechanism", mechanism]
            )
        except RuntimeError as exc:
            if "freezer cannot work here" not in str(exc):
                raise
            mechanism_agents[key] = str(exc).splitlines()[-1]
    agent = mechanism_agents[key]
    if not isinstance(agent, HostAgentProcess):
        pytest.skip(agent)
    return agent


@pytest.fixture
async def pausing_stub(pausing_agent: HostAgentProcess) -> AsyncIterator[Any]:
    async with grpc.aio.insecure_channel(pausing_agent.address) as channel:
        yield pb_grpc.HostAgentStub(channel)


@pytest.fixture
async def pausing_capsule(pausing_stub: Any) -> AsyncIterator[str]:
    sandbox_id = new_sandbox_id()
    await pausing_stub.CreateSandbox(pb.CreateSandboxRequest(sandbox_id=sandbox_id), timeout=30)
    yield sandbox_id
    try:
        await pausing_stub.DestroySandbox(pb.DestroySandboxRequest(sandbox_id=sandbox_id), timeout=30)
    except grpc.aio.AioRpcError as exc:
        if exc.code() != grpc.StatusCode.NOT_FOUND:  # NOT_FOUND: the test destroyed it itself
            raise


async def _pause(stub: Any, sandbox_id: str) -> Any:
    return (await stub.PauseSandbox(pb.PauseSandboxRequest(sandbox_id=sandbox_id), timeout=30)).sandbox


async def _resume(stub: Any, sandbox_id: str) -> Any:
    return (await stub.ResumeSandbox(pb.ResumeSandboxRequest(sandbox_id=sandbox_id), timeout=30)).sandbox


async def _listed(stub: Any, sandbox_id: str) -> Any:
    response = await stub.ListSandboxes(pb.ListSandboxesRequest(), timeout=30)
    return {s.sandbox_id: s for s in response.sandboxes}[sandbox_id]


def _pids_of(cmdline: str) -> list[int]:
    """Host pids, not zombies, whose command line is exactly `cmdline`."""
    pids = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/cmdline", "rb") as f:
                    args = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
                with open(f"/proc/{name}/stat", "rb") as f:
                    state = f.read().rsplit(b")", 1)[1].split()[0]
            except OSError:
                continue
            if args == cmdline and state != b"Z":
                pids.append(int(name))
    return pids


async def _wait_for_pids(cmdline: str, present: bool = True) -> list[int]:
    pids: list[int] = []

    def settled() -> bool:
        pids[:] = _pids_of(cmdline)
        return bool(pids) == present

    await wait_until(settled)
    return pids


def _sleep_marker() -> str:
    return f"{7000 + uuid.uuid4().int % 1000}.{uuid.uuid4().int % 1000:03d}"


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat", "rb") as f:
        return f.read().rsplit(b")", 1)[1].split()[0].decode()


# Every mechanism, both runtimes


def test_the_agent_logs_its_pause_mechanism(
    request: pytest.FixtureRequest, pausing_agent: HostAgentProcess
) -> None:
    _runtime, mechanism = request.node.callspec.params["pausing_agent"]
    assert f"pause mechanism: {mechanism}" in pausing_agent.log()


async def test_a_paused_counter_stops_and_resumes_where_it_was(
    pausing_stub: Any, pausing_capsule: str
) -> None:
    terminal, _ = await start_terminal(pausing_stub, pausing_capsule, "/bin/bash", "-c", COUNTER)
    await terminal.expect(b"n=3\r\n")
    assert (await _pause(pausing_stub, pausing_capsule)).state == "paused"
    # Typed input waits in the terminal; its echo follows everything written before the pause.
    await terminal.send(b"#")
    await terminal.expect(b"#")
    frozen_output = bytes(terminal.output)
    reader = asyncio.ensure_future(terminal.next_event())
    done, _ = await asyncio.wait({reader}, timeout=QUIET)
    assert not done, f"output while paused: {bytes(terminal.output[len(frozen_output) :])!r}"
    last = int(re.findall(rb"n=(\d+)", frozen_output)[-1])
    assert (await _resume(pausing_stub, pausing_capsule)).state == "running"
    await reader
    await terminal.expect(f"n={last + 2}\r\n".encode())
    counted = [int(n) for n in re.findall(rb"n=(\d+)", bytes(terminal.output))]
    assert counted == list(range(1, len(counted) + 1))  # continued, not restarted
    await terminal.kill()


async def test_a_shell_job_survives_a_pause_without_being_reported_stopped(
    pausing_stub: Any, pausing_capsule: str
) -> None:
    marker = _sleep_marker()
    terminal, _ = await start_terminal(pausing_stub, pausing_capsule, "/bin/bash", "--norc", "-i")
    await terminal.send(f"sleep {marker}\n".encode())
    [sleeper] = await _wait_for_pids(f"sleep {marker}")
    await _pause(pausing_stub, pausing_capsule)
    assert _pids_of(f"sleep {marker}") == [sleeper]
    await _resume(pausing_stub, pausing_capsule)
    assert _pids_of(f"sleep {marker}") == [sleeper]
    assert _state(sleeper) not in ("T", "t")
    await terminal.send(b"\x03")  # ^C: the job was in the foreground all along
    await terminal.send(b"echo alive-$((40+2))\n")
    await terminal.expect(b"alive-42")
    assert b"Stopped" not in terminal.output
    await _wait_for_pids(f"sleep {marker}", present=False)
    await terminal.kill()


async def test_a_session_of_a_paused_sandbox_can_be_killed(pausing_stub: Any, pausing_capsule: str) -> None:
    terminal, _ = await start_terminal(pausing_stub, pausing_capsule, "/bin/sh", "-c", "echo up; exec cat")
    await terminal.expect(b"up")
    await _pause(pausing_stub, pausing_capsule)
    await terminal.kill()
    assert await terminal.wait_exit() == 137
    assert (await _listed(pausing_stub, pausing_capsule)).pty_sessions == 0
    assert (await _resume(pausing_stub, pausing_capsule)).state == "running"


async def test_destroying_a_paused_sandbox_kills_everything(
    pausing_stub: Any, pausing_agent: HostAgentProcess, pausing_capsule: str
) -> None:
    job, daemon = _sleep_marker(), _sleep_marker()
    # A background job, and a process in its own session that only the cgroup or the tree finds.
    script = f"sleep {job} & setsid sleep {daemon} & echo up; wait"
    terminal, _ = await start_terminal(pausing_stub, pausing_capsule, "/bin/bash", "-c", script)
    await terminal.expect(b"up")
    await _wait_for_pids(f"sleep {job}")
    await _wait_for_pids(f"sleep {daemon}")
    await _pause(pausing_stub, pausing_capsule)
    await pausing_stub.DestroySandbox(pb.DestroySandboxRequest(sandbox_id=pausing_capsule), timeout=30)
    assert await terminal.wait_exit() == 137
    await _wait_for_pids(f"sleep {job}", present=False)
    await _wait_for_pids(f"sleep {daemon}", present=False)
    assert not capsule_dir(pausing_agent, pausing_capsule).exists()


# The rules around a paused sandbox (each runtime's agent, its automatic mechanism)


async def test_starting_a_session_in_a_paused_sandbox_is_refused(stub: Any, capsule: str) -> None:
    await _pause(stub, capsule)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await start_terminal(stub, capsule, "/bin/true")
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert caught.value.details() == f"sandbox {capsule} is paused"
    await _resume(stub, capsule)
    terminal, _ = await start_terminal(stub, capsule, "/bin/sh", "-c", "exit 4")
    assert await terminal.wait_exit() == 4


async def test_attach_input_and_resize_work_while_paused(stub: Any, capsule: str) -> None:
    first, _ = await start_terminal(stub, capsule, "/bin/sh", "-c", "echo up; exec cat")
    await first.expect(b"up")
    await _pause(stub, capsule)
    second = await attach_terminal(stub, capsule, first.tag)
    await first.resize(100, 30)
    await first.send(b"queued\n")  # the terminal echoes it; cat reads it after the resume
    await second.expect(b"queued\r\n")
    await _resume(stub, capsule)
    await second.expect(b"queued\r\nqueued\r\n")
    await first.expect(b"queued\r\nqueued\r\n")
    await first.kill()
    assert await second.wait_exit() == 137


async def test_list_sandboxes_shows_the_state(stub: Any, capsule: str) -> None:
    assert (await _listed(stub, capsule)).state == "running"
    await _pause(stub, capsule)
    assert (await _listed(stub, capsule)).state == "paused"
    await _resume(stub, capsule)
    assert (await _listed(stub, capsule)).state == "running"


async def test_pause_and_resume_are_idempotent(stub: Any, agent: HostAgentProcess, capsule: str) -> None:
    terminal, _ = await start_terminal(stub, capsule, "/bin/cat")
    for _ in range(2):
        paused = await _pause(stub, capsule)
        assert (paused.sandbox_id, paused.state, paused.pty_sessions) == (capsule, "paused", 1)
        assert paused.runtime == agent.runtime
    for _ in range(2):
        assert (await _resume(stub, capsule)).state == "running"
    await terminal.send(b"still-alive\n")
    await terminal.expect(b"still-alive\r\nstill-alive\r\n")
    await terminal.kill()


async def test_creating_a_paused_sandbox_again_reports_it_paused(stub: Any, capsule: str) -> None:
    await _pause(stub, capsule)
    response = await stub.CreateSandbox(pb.CreateSandboxRequest(sandbox_id=capsule), timeout=30)
    assert response.sandbox.state == "paused"


@pytest.mark.parametrize("method", ["PauseSandbox", "ResumeSandbox"])
async def test_pausing_an_unknown_sandbox_is_not_found(stub: Any, method: str) -> None:
    request = getattr(pb, f"{method}Request")(sandbox_id="no-such-capsule")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await getattr(stub, method)(request, timeout=30)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert caught.value.details() == "sandbox no-such-capsule not found on this host"


# Across a restart of the agent


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "agent"


@pytest.mark.agent
@pytest.mark.parametrize("runtime", ["process", "oci"])
async def test_the_paused_state_survives_an_agent_restart(data_dir: Path, runtime: str) -> None:
    agent = start_hostagent(data_dir, runtime=runtime)
    try:
        async with grpc.aio.insecure_channel(agent.address) as channel:
            stub = pb_grpc.HostAgentStub(channel)
            await stub.CreateSandbox(pb.CreateSandboxRequest(sandbox_id="sleepy"), timeout=30)
            await start_terminal(stub, "sleepy", "/bin/cat")
            await _pause(stub, "sleepy")
        agent.stop()
        agent = start_hostagent(data_dir, runtime=runtime)
        async with grpc.aio.insecure_channel(agent.address) as channel:
            stub = pb_grpc.HostAgentStub(channel)
            listed = await _listed(stub, "sleepy")
            # The processes died with the agent; the capsule stays paused until resumed.
            assert (listed.state, listed.pty_sessions) == ("paused", 0)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await start_terminal(stub, "sleepy", "/bin/true")
            assert caught.value.details() == "sandbox sleepy is paused"
            assert (await _resume(stub, "sleepy")).state == "running"
    finally:
        agent.stop()


@pytest.mark.agent
@pytest.mark.parametrize("runtime", ["process", "oci"])
async def test_a_restarted_agent_kills_what_a_crashed_one_left_behind(data_dir: Path, runtime: str) -> None:
    args = ["--cgroup-root", f"wrenn-test-{uuid.uuid4().hex[:12]}"]
    agent = start_hostagent(data_dir, runtime=runtime, args=args)
    marker = _sleep_marker()
    try:
        if "pause mechanism: signals" in agent.log():
            pytest.skip("without a cgroup the agent cannot find a crashed run's processes")
        async with grpc.aio.insecure_channel(agent.address) as channel:
            stub = pb_grpc.HostAgentStub(channel)
            await stub.CreateSandbox(pb.CreateSandboxRequest(sandbox_id="orphans"), timeout=30)
            _attached, _ = await start_terminal(  # held open until the crash
                stub, "orphans", "/bin/sh", "-c", f"setsid sleep {marker} & exec cat"
            )
            [orphan] = await _wait_for_pids(f"sleep {marker}")
            await _pause(stub, "orphans")
        agent.proc.kill()  # a crash: no clean-up
        agent.stop()
        assert _pids_of(f"sleep {marker}") == [orphan]
        agent = start_hostagent(data_dir, runtime=runtime, args=args)
        await _wait_for_pids(f"sleep {marker}", present=False)
        assert "left over in sandbox orphans by an earlier run" in agent.log()
    finally:
        agent.stop()


@pytest.mark.agent
async def test_a_restart_reboots_an_oci_capsule_with_its_files_limits_and_policy(data_dir: Path) -> None:
    args = ["--cgroup-root", f"wrenn-test-{uuid.uuid4().hex[:12]}"]
    agent = start_hostagent(data_dir, runtime="oci", args=args)
    marker = _sleep_marker()
    try:
        async with grpc.aio.insecure_channel(agent.address) as channel:
            stub = pb_grpc.HostAgentStub(channel)
            request = pb.CreateSandboxRequest(
                sandbox_id="reboots", memory_mb=200, network=pb.NetworkPolicy(allow_internet=False)
            )
            await stub.CreateSandbox(request, timeout=30)
            _held, _ = await start_terminal(  # open until the agent stops
                stub, "reboots", "/bin/sh", "-c", f"echo kept > ~/file; setsid sleep {marker} & exec cat"
            )
            await _wait_for_pids(f"sleep {marker}")
        agent.stop()
        # Stopping the agent ended every process of the capsule, its terminal with the rest.
        assert _pids_of(f"sleep {marker}") == []
        agent = start_hostagent(data_dir, runtime="oci", args=args)
        async with grpc.aio.insecure_channel(agent.address) as channel:
            stub = pb_grpc.HostAgentStub(channel)
            listed = await _listed(stub, "reboots")
            assert (listed.state, listed.pty_sessions) == ("running", 0)
            check, _ = await start_terminal(
                stub, "reboots", "/bin/sh", "-c", "cat ~/file; ps -e | grep -c sleep"
            )
            assert await check.wait_exit() == 0
            assert check.output.split() == [b"kept", b"1"]  # the file, and init's sleep alone
        memory = Path("/sys/fs/cgroup/memory") / args[1] / "reboots" / "memory.limit_in_bytes"
        if memory.exists():  # cgroup v1 here; under v2 the limit is memory.max
            assert int(memory.read_text()) == 200 << 20
        policy = json.loads((capsule_dir(agent, "reboots") / "network.json").read_text())
        assert policy["allow_internet"] is False
    finally:
        agent.stop()
