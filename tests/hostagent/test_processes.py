"""Processes with pipes (exec) in every runtime: output by stream, exit codes, timeouts, background
runs, attach and resume, listing and signals, and what a hostile caller or process cannot do."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

import grpc
import pytest

from hostagent.procs import ARGV_MAX
from protos import hostagent_pb2 as pb
from protos import hostagent_pb2_grpc as pb_grpc
from tests.hostagent.conftest import CapsuleFactory
from tests.support.hostagent import HostAgentProcess, start_hostagent, start_terminal
from tests.support.polling import wait_until

pytestmark = pytest.mark.timeout(60)


async def run(stub: Any, sandbox_id: str, cmd: str, *args: str, **fields: Any) -> list[Any]:
    """Every event of a ProcessStart stream."""
    fields.setdefault("tag", f"proc-{os.urandom(4).hex()}")
    request = pb.ProcessStartRequest(sandbox_id=sandbox_id, cmd=cmd, args=list(args), **fields)
    return [event async for event in stub.ProcessStart(request, timeout=30)]


def streams(events: list[Any]) -> tuple[bytes, bytes]:
    out = b"".join(e.output.data for e in events if e.HasField("output") and e.output.stream == pb.STDOUT)
    err = b"".join(e.output.data for e in events if e.HasField("output") and e.output.stream == pb.STDERR)
    return out, err


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def exited(events: list[Any]) -> Any:
    assert events[-1].HasField("exited"), events
    return events[-1].exited


async def test_stdout_stderr_and_the_exit_code_come_back_apart(stub: Any, capsule: str) -> None:
    events = await run(stub, capsule, "/bin/sh", "-c", "echo out; echo err >&2; exit 3")
    assert events[0].HasField("started")
    assert events[0].started.pid > 0
    assert streams(events) == (b"out\n", b"err\n")
    assert exited(events).exit_code == 3
    assert not exited(events).timed_out


async def test_offsets_count_both_streams_in_the_order_read(stub: Any, capsule: str) -> None:
    events = await run(stub, capsule, "/bin/sh", "-c", "echo one; sleep 0.1; echo two >&2; sleep 0.1; echo 3")
    outputs = [e.output for e in events if e.HasField("output")]
    expected = 0
    for output in outputs:
        assert output.offset == expected
        expected += len(output.data)
    assert expected == len(b"one\ntwo\n3\n")


async def test_envs_and_cwd_reach_the_process(stub: Any, agent: HostAgentProcess, capsule: str) -> None:
    events = await run(
        stub,
        capsule,
        "/bin/sh",
        "-c",
        'mkdir -p work && cd work && pwd -P; echo "$GREETING"',
        envs={"GREETING": "hi"},
    )
    assert exited(events).exit_code == 0
    events = await run(stub, capsule, "/bin/sh", "-c", "pwd", cwd="work", envs={"GREETING": "hi"})
    assert streams(events)[0].endswith(b"/work\n")


async def test_a_capsule_runs_exec_as_its_root_in_root_s_home(
    agent: HostAgentProcess, stub: Any, capsule: str
) -> None:
    events = await run(stub, capsule, "/bin/sh", "-c", 'id -u; pwd; echo "$HOME"; touch made-here')
    out, _ = streams(events)
    if agent.runtime == "process":
        # Plain host processes: the agent's own user, in the capsule's directory of the host.
        assert out.split()[0] == str(os.geteuid()).encode()
    else:
        assert out.split() == [b"0", b"/root", b"/root"]
    assert exited(events).exit_code == 0


async def test_user_names_who_runs_it(oci_stub: Any, oci_capsules: CapsuleFactory) -> None:
    capsule = await oci_capsules()
    events = await run(oci_stub, capsule, "/bin/sh", "-c", 'id -un; echo "$HOME"', user="user")
    assert streams(events)[0] == b"user\n/home/user\n"


async def test_a_missing_command_is_refused_before_it_starts(stub: Any, capsule: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await run(stub, capsule, "/no/such/program")
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "cannot start '/no/such/program'" in (failure.value.details() or "")


async def test_a_timeout_kills_the_whole_process_group_and_says_so(stub: Any, capsule: str) -> None:
    # The shell's child would keep the pipe open for a minute: it must die with the shell.
    events = await run(stub, capsule, "/bin/sh", "-c", "sleep 60 & echo started; wait", timeout_ms=500)
    assert streams(events)[0] == b"started\n"
    assert exited(events).timed_out
    assert exited(events).exit_code == 128 + signal.SIGKILL
    listed = await stub.ListProcesses(pb.ListProcessesRequest(sandbox_id=capsule))
    assert not any(p.args == ["60"] for p in listed.processes)


async def test_a_background_process_runs_on_and_can_be_attached_from_its_start(
    stub: Any, capsule: str
) -> None:
    events = await run(
        stub,
        capsule,
        "/bin/sh",
        "-c",
        "echo first; read line < /dev/null; sleep 0.3; echo second",
        tag="proc-bg000001",
        background=True,
    )
    assert len(events) == 1
    assert events[0].started.tag == "proc-bg000001"
    attach = pb.ProcessAttachRequest(sandbox_id=capsule, tag="proc-bg000001", resume=True, from_offset=0)
    seen = [event async for event in stub.ProcessAttach(attach, timeout=30)]
    assert streams(seen)[0] == b"first\nsecond\n"
    assert exited(seen).exit_code == 0


async def test_attaching_by_pid_finds_the_started_process(stub: Any, capsule: str) -> None:
    events = await run(stub, capsule, "/bin/sh", "-c", "sleep 0.3; echo by-pid", background=True)
    attach = pb.ProcessAttachRequest(sandbox_id=capsule, pid=events[0].started.pid)
    seen = [event async for event in stub.ProcessAttach(attach, timeout=30)]
    assert seen[0].started == events[0].started
    assert b"by-pid" in streams(seen)[0]


@pytest.mark.agent
async def test_resuming_before_the_kept_output_is_told_what_it_missed(tmp_path: Any) -> None:
    agent = start_hostagent(tmp_path / "agent", runtime="process", args=["--process-buffer", "4096"])
    try:
        async with grpc.aio.insecure_channel(agent.address) as channel:
            stub = pb_grpc.HostAgentStub(channel)
            await stub.CreateSandbox(pb.CreateSandboxRequest(sandbox_id="cap-missed"), timeout=30)
            await run(stub, "cap-missed", "/bin/sh", "-c", "head -c 10000 /dev/zero", tag="proc-big")
            attach = pb.ProcessAttachRequest(
                sandbox_id="cap-missed", tag="proc-big", resume=True, from_offset=0
            )
            seen = [event async for event in stub.ProcessAttach(attach, timeout=30)]
            assert seen[0].started.tag == "proc-big"
            assert seen[1].HasField("missed")
            assert seen[1].missed.offset == 10000 - 4096
            assert seen[1].missed.bytes == 10000 - 4096
            assert len(streams(seen)[0]) == 4096
            beyond = pb.ProcessAttachRequest(
                sandbox_id="cap-missed", tag="proc-big", resume=True, from_offset=10001
            )
            with pytest.raises(grpc.aio.AioRpcError) as failure:
                _ = [event async for event in stub.ProcessAttach(beyond, timeout=30)]
            assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        agent.stop()


async def test_a_foreground_process_whose_caller_goes_away_is_killed(stub: Any, capsule: str) -> None:
    request = pb.ProcessStartRequest(
        sandbox_id=capsule, tag="proc-orphan01", cmd="/bin/sh", args=["-c", "echo up; exec sleep 60"]
    )
    call = stub.ProcessStart(request, timeout=30)
    async for event in call:
        if event.HasField("output"):
            break
    call.cancel()

    async def gone() -> bool:
        listed = await stub.ListProcesses(pb.ListProcessesRequest(sandbox_id=capsule))
        return not any(p.tag == "proc-orphan01" for p in listed.processes)

    await wait_until(gone, within=10)


async def test_the_list_holds_every_process_of_the_capsule_with_tags_for_started_ones(
    stub: Any, capsule: str
) -> None:
    terminal, _ = await start_terminal(stub, capsule, "/bin/sh", "-c", "exec sleep 4242")
    events = await run(stub, capsule, "sleep", "4343", tag="proc-listed01", background=True)

    async def terminal_listed() -> bool:
        found = (await stub.ListProcesses(pb.ListProcessesRequest(sandbox_id=capsule))).processes
        return any(p.args == ["4242"] for p in found)

    await wait_until(terminal_listed, within=10)
    listed = (await stub.ListProcesses(pb.ListProcessesRequest(sandbox_id=capsule))).processes
    started = [p for p in listed if p.tag == "proc-listed01"]
    assert len(started) == 1
    assert started[0].pid == events[0].started.pid
    assert (started[0].cmd, list(started[0].args)) == ("sleep", ["4343"])
    # A terminal's process: in the capsule, not started by exec.
    assert any(p.args == ["4242"] and p.tag == "" for p in listed)
    await terminal.kill()
    await stub.SignalProcess(pb.SignalProcessRequest(sandbox_id=capsule, tag="proc-listed01"))


async def test_signals_by_tag_and_by_pid(stub: Any, agent: HostAgentProcess, capsule: str) -> None:
    await run(
        stub,
        capsule,
        "/bin/sh",
        "-c",
        "trap 'echo got-term; exit 7' TERM; echo ready; while :; do sleep 0.1; done",
        tag="proc-sig00001",
        background=True,
    )
    attach = stub.ProcessAttach(
        pb.ProcessAttachRequest(sandbox_id=capsule, tag="proc-sig00001", resume=True), timeout=30
    )
    events = []
    signalled = False
    async for event in attach:
        events.append(event)
        if not signalled and b"ready" in streams(events)[0]:
            signalled = True
            await stub.SignalProcess(
                pb.SignalProcessRequest(sandbox_id=capsule, tag="proc-sig00001", signal=signal.SIGTERM)
            )
    if agent.runtime == "bwrap":
        # The group's leader is bwrap itself: the signal ends it, and with it the pid namespace
        # of the command, whose trap may or may not have run by then.
        assert exited(events).exit_code in (7, 128 + signal.SIGTERM, 128 + signal.SIGKILL)
    else:
        assert b"got-term" in streams(events)[0]
        assert exited(events).exit_code == 7

    terminal, _ = await start_terminal(stub, capsule, "/bin/sh", "-c", "exec sleep 4545")

    async def listed_pid() -> int | None:
        found = (await stub.ListProcesses(pb.ListProcessesRequest(sandbox_id=capsule))).processes
        return next((p.pid for p in found if p.args == ["4545"]), None)

    await wait_until(lambda: _found(listed_pid), within=10)
    pid = await listed_pid()
    assert pid is not None
    reply = await stub.SignalProcess(pb.SignalProcessRequest(sandbox_id=capsule, pid=pid))
    assert list(reply.pids) == [pid]
    assert await terminal.wait_exit() == 128 + signal.SIGKILL


async def test_bad_requests_get_specific_errors(stub: Any, capsule: str) -> None:
    cases = [
        (pb.ProcessStartRequest(sandbox_id=capsule, tag="proc-x", cmd=""), "cmd is required"),
        (pb.ProcessStartRequest(sandbox_id=capsule, tag="", cmd="true"), "tag is required"),
        (pb.ProcessStartRequest(sandbox_id=capsule, tag="../x", cmd="true"), "invalid tag"),
        (
            pb.ProcessStartRequest(sandbox_id=capsule, tag="proc-x", cmd="true", envs={"A=B": "c"}),
            "invalid environment variable name",
        ),
        (pb.ProcessStartRequest(sandbox_id=capsule, tag="proc-x", cmd="tr\0ue"), "NUL"),
        (
            pb.ProcessStartRequest(sandbox_id=capsule, tag="proc-x", cmd="true", user="nobody-here"),
            "unknown user",
        ),
    ]
    for request, message in cases:
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            _ = [event async for event in stub.ProcessStart(request, timeout=30)]
        assert failure.value.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION)
        assert message in (failure.value.details() or ""), (request, failure.value.details())
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stub.SignalProcess(pb.SignalProcessRequest(sandbox_id=capsule, tag="proc-x", signal=99))
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stub.SignalProcess(pb.SignalProcessRequest(sandbox_id=capsule))
    assert "by tag or by pid" in (failure.value.details() or "")


async def test_a_tag_in_use_is_refused(stub: Any, capsule: str) -> None:
    await run(stub, capsule, "sleep", "5", tag="proc-twice001", background=True)
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await run(stub, capsule, "true", tag="proc-twice001")
    assert failure.value.code() == grpc.StatusCode.ALREADY_EXISTS
    await stub.SignalProcess(pb.SignalProcessRequest(sandbox_id=capsule, tag="proc-twice001"))


async def test_unknown_sandboxes_and_processes_are_not_found(stub: Any, capsule: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await run(stub, "cap-missing", "true")
    assert failure.value.code() == grpc.StatusCode.NOT_FOUND
    for request in (
        pb.SignalProcessRequest(sandbox_id=capsule, tag="proc-unknown"),
        pb.SignalProcessRequest(sandbox_id=capsule, pid=987654),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await stub.SignalProcess(request)
        assert failure.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        _ = [
            e
            async for e in stub.ProcessAttach(
                pb.ProcessAttachRequest(sandbox_id=capsule, pid=987654), timeout=30
            )
        ]
    assert failure.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_paused_capsule_refuses_new_processes(stub: Any, capsule: str) -> None:
    await stub.PauseSandbox(pb.PauseSandboxRequest(sandbox_id=capsule))
    try:
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await run(stub, capsule, "true")
        assert failure.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "paused" in (failure.value.details() or "")
    finally:
        await stub.ResumeSandbox(pb.ResumeSandboxRequest(sandbox_id=capsule))


# From the attacker's side: a caller naming pids, and a process flooding its pipes.


async def test_no_pid_outside_the_capsule_can_be_signalled(
    stub: Any, agent: HostAgentProcess, capsule: str, other_capsule: str
) -> None:
    """The agent, this test and a neighbour's process are not in the capsule a caller names."""
    events = await run(stub, capsule, "sleep", "30", tag="proc-victim01", background=True)
    outside = [agent.proc.pid, os.getpid()]
    if agent.runtime != "oci":
        # Host pids: the neighbour's own. (Under OCI each capsule numbers its own processes.)
        outside.append(events[0].started.pid)
    for pid in outside:
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await stub.SignalProcess(
                pb.SignalProcessRequest(sandbox_id=other_capsule, pid=pid, signal=signal.SIGKILL)
            )
        assert failure.value.code() == grpc.StatusCode.NOT_FOUND, pid
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stub.SignalProcess(pb.SignalProcessRequest(sandbox_id=other_capsule, tag="proc-victim01"))
    assert failure.value.code() == grpc.StatusCode.NOT_FOUND
    mine = (await stub.ListProcesses(pb.ListProcessesRequest(sandbox_id=capsule))).processes
    assert any(p.tag == "proc-victim01" and p.state not in ("Z", "X") for p in mine)
    theirs = (await stub.ListProcesses(pb.ListProcessesRequest(sandbox_id=other_capsule))).processes
    assert not any(p.args == ["30"] for p in theirs)
    await stub.SignalProcess(pb.SignalProcessRequest(sandbox_id=capsule, tag="proc-victim01"))


async def test_a_flood_of_output_with_nobody_reading_keeps_only_the_replay_buffer(
    stub: Any, agent: HostAgentProcess, capsule: str
) -> None:
    """`yes` in the background for a while: the agent holds its replay buffer, not the flood."""
    before = _rss_kib(agent.proc.pid)
    await run(stub, capsule, "yes", tag="proc-flood001", background=True)
    attach = pb.ProcessAttachRequest(sandbox_id=capsule, tag="proc-flood001")

    async def far_along() -> bool:
        call = stub.ProcessAttach(attach, timeout=10)
        await call.read()  # started
        event = await call.read()
        call.cancel()
        return bool(event.HasField("output") and event.output.offset > 64 * 1024 * 1024)

    await wait_until(far_along, within=45, every=0.5)
    grown = _rss_kib(agent.proc.pid) - before
    assert grown < 32 * 1024, f"the agent grew by {grown} KiB with 64 MiB of output nobody read"
    await stub.SignalProcess(pb.SignalProcessRequest(sandbox_id=capsule, tag="proc-flood001"))


async def test_a_slow_reader_throttles_the_writer_instead_of_losing_bytes(stub: Any, capsule: str) -> None:
    request = pb.ProcessStartRequest(
        sandbox_id=capsule,
        tag="proc-slow0001",
        cmd="/bin/sh",
        args=["-c", "head -c 3000000 /dev/zero | tr '\\0' a"],
    )
    total = 0
    async for event in stub.ProcessStart(request, timeout=60):
        if event.HasField("output"):
            assert event.output.offset == total
            total += len(event.output.data)
            await asyncio.sleep(0.001)
        if event.HasField("missed"):
            pytest.fail("a foreground reader missed output")
    assert total == 3000000


async def _found(lookup: Any) -> bool:
    return bool(await lookup())


@pytest.mark.agent
async def test_a_sandbox_runs_and_keeps_at_most_max_processes(tmp_path: Any) -> None:
    """A caller starting process after process cannot make the agent hold more than its limit."""
    agent = start_hostagent(tmp_path / "agent", runtime="process", args=["--max-processes", "2"])
    try:
        async with grpc.aio.insecure_channel(agent.address) as channel:
            stub = pb_grpc.HostAgentStub(channel)
            await stub.CreateSandbox(pb.CreateSandboxRequest(sandbox_id="cap-capped"), timeout=30)
            for tag in ("proc-cap00001", "proc-cap00002"):
                await run(stub, "cap-capped", "sleep", "30", tag=tag, background=True)
            with pytest.raises(grpc.aio.AioRpcError) as failure:
                await run(stub, "cap-capped", "true", tag="proc-cap00003")
            assert failure.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "too many processes" in (failure.value.details() or "")
            assert "at most 2" in (failure.value.details() or "")
            for tag in ("proc-cap00001", "proc-cap00002"):
                await stub.SignalProcess(pb.SignalProcessRequest(sandbox_id="cap-capped", tag=tag))
                ended = pb.ProcessAttachRequest(sandbox_id="cap-capped", tag=tag)
                assert exited([e async for e in stub.ProcessAttach(ended, timeout=10)]).exit_code == 137
            # Ended ones are kept for late attaches, the newest two of them.
            for number in range(3, 7):
                await run(stub, "cap-capped", "/bin/sh", "-c", f"exit {number}", tag=f"proc-cap0000{number}")
            kept = pb.ProcessAttachRequest(sandbox_id="cap-capped", tag="proc-cap00006")
            assert exited([e async for e in stub.ProcessAttach(kept, timeout=10)]).exit_code == 6
            gone = pb.ProcessAttachRequest(sandbox_id="cap-capped", tag="proc-cap00003")
            with pytest.raises(grpc.aio.AioRpcError) as failure:
                _ = [e async for e in stub.ProcessAttach(gone, timeout=10)]
            assert failure.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        agent.stop()


async def test_a_process_with_huge_arguments_is_listed_by_their_start(stub: Any, capsule: str) -> None:
    """Arguments are the capsule's to choose: a listing reads only the first ARGV_MAX bytes."""
    # A shell that waits, its own arguments 100 kB of x (`;:` keeps it from exec'ing sleep).
    script = 'sh -c "sleep 30;:" huge "$(head -c 100000 /dev/zero | tr "\\0" x)" & wait'
    await run(stub, capsule, "/bin/sh", "-c", script, tag="proc-huge0001", background=True)

    async def huge() -> list[Any]:
        found = (await stub.ListProcesses(pb.ListProcessesRequest(sandbox_id=capsule))).processes
        return [p for p in found if p.args[:3] == ["-c", "sleep 30;:", "huge"]]

    await wait_until(lambda: _found(huge), within=10)
    [waiter] = await huge()
    assert waiter.args[3].startswith("xxxx")
    assert len(waiter.cmd) + sum(len(a) + 1 for a in waiter.args) <= ARGV_MAX
    await stub.SignalProcess(pb.SignalProcessRequest(sandbox_id=capsule, tag="proc-huge0001"))
