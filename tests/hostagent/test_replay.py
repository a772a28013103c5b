"""Replay buffers through a real agent: resume at an offset, and PtyRead, plain or with terminal
queries neutralised."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from hostagent.__main__ import parse_args
from protos import hostagent_pb2 as pb
from protos import hostagent_pb2_grpc as pb_grpc
from tests.hostagent.conftest import new_sandbox_id
from tests.support.hostagent import (
    REPO_ROOT,
    HostAgentProcess,
    Terminal,
    attach_terminal,
    read_output,
    start_hostagent,
    start_terminal,
)
from tests.support.polling import wait_until

pytestmark = pytest.mark.timeout(60)

SEQ = "stty raw -echo && seq 1 20000"
SEQ_OUTPUT = "".join(f"{n}\n" for n in range(1, 20001)).encode()
SMALL_BUFFER = 4096


def _beyond_end(offset: int, end: int) -> str:
    return f"offset {offset} is beyond the end of the output ({end} bytes)"


async def _finished(stub: Any, capsule: str, script: str) -> Terminal:
    terminal, _ = await start_terminal(stub, capsule, "/bin/sh", "-c", script)
    assert await terminal.wait_exit() == 0
    return terminal


async def _read_until(terminal: Terminal, size: int) -> None:
    async with asyncio.timeout(30):
        while len(terminal.output) < size:
            await terminal.next_event()


async def _streams(stub: Any, capsule: str, tag: str) -> int:
    response = await stub.ListPtySessions(pb.ListPtySessionsRequest(sandbox_id=capsule), timeout=30)
    streams: int = next(s.streams for s in response.sessions if s.tag == tag)
    return streams


@pytest.fixture(scope="module")
def small_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostAgentProcess]:
    """An agent whose sessions keep only the last 4 KiB of output."""
    agent = start_hostagent(
        tmp_path_factory.mktemp("agent-small-replay"),
        runtime="process",
        args=["--replay-buffer", str(SMALL_BUFFER)],
    )
    yield agent
    agent.stop()


@pytest.fixture
async def small_stub(small_agent: HostAgentProcess) -> AsyncIterator[Any]:
    async with grpc.aio.insecure_channel(small_agent.address) as channel:
        yield pb_grpc.HostAgentStub(channel)


@pytest.fixture
async def small_capsule(small_stub: Any) -> AsyncIterator[str]:
    sandbox_id = new_sandbox_id()
    await small_stub.CreateSandbox(pb.CreateSandboxRequest(sandbox_id=sandbox_id), timeout=30)
    yield sandbox_id
    await small_stub.DestroySandbox(pb.DestroySandboxRequest(sandbox_id=sandbox_id), timeout=30)


# Resume


async def test_resume_in_the_middle_of_a_chunk_then_live_output(stub: Any, capsule: str) -> None:
    first, _ = await start_terminal(stub, capsule, "/bin/sh", "-c", SEQ + " && exec cat")
    chunks: list[tuple[int, int]] = []
    while len(first.output) < len(SEQ_OUTPUT):
        event = await first.next_event()
        if event.WhichOneof("event") == "output":
            chunks.append((event.output.offset, len(event.output.data)))
    assert bytes(first.output) == SEQ_OUTPUT
    offset, size = max(chunks, key=lambda chunk: chunk[1])
    middle = offset + size // 2
    resumed = await attach_terminal(stub, capsule, first.tag, resume=True, from_offset=middle)
    await first.send(b"live-bytes")
    await resumed.expect(b"live-bytes")
    assert resumed.missed == []
    assert resumed.first_offset == middle
    assert bytes(resumed.output) == SEQ_OUTPUT[middle:] + b"live-bytes"
    await first.kill()
    assert await resumed.wait_exit() == 137


async def test_resume_after_exit_gets_the_tail_then_exited(stub: Any, capsule: str) -> None:
    terminal = await _finished(stub, capsule, SEQ)
    late = await attach_terminal(stub, capsule, terminal.tag, resume=True, from_offset=100_001)
    assert await late.wait_exit() == 0
    assert late.first_offset == 100_001
    assert bytes(late.output) == SEQ_OUTPUT[100_001:]


async def test_resume_at_the_end_of_an_exited_session_gets_only_exited(stub: Any, capsule: str) -> None:
    terminal = await _finished(stub, capsule, SEQ)
    late = await attach_terminal(stub, capsule, terminal.tag, resume=True, from_offset=len(SEQ_OUTPUT))
    event = await late.next_event()
    assert (event.WhichOneof("event"), event.exited.exit_code) == ("exited", 0)


async def test_resume_of_evicted_bytes_reports_them_missed(small_stub: Any, small_capsule: str) -> None:
    terminal = await _finished(small_stub, small_capsule, SEQ)
    start = len(SEQ_OUTPUT) - SMALL_BUFFER
    late = await attach_terminal(small_stub, small_capsule, terminal.tag, resume=True, from_offset=100)
    assert await late.wait_exit() == 0
    assert late.missed == [(start, start - 100)]
    assert late.first_offset == start
    assert bytes(late.output) == SEQ_OUTPUT[start:]


@pytest.mark.parametrize("running", [True, False], ids=["running", "exited"])
async def test_resume_beyond_the_end_is_an_invalid_argument(stub: Any, capsule: str, running: bool) -> None:
    script = "stty raw -echo && printf 12345" + (" && exec sleep 1000" if running else "")
    terminal, _ = await start_terminal(stub, capsule, "/bin/sh", "-c", script)
    await terminal.expect(b"12345")
    if not running:
        await terminal.wait_exit()
    late = await attach_terminal(stub, capsule, terminal.tag, resume=True, from_offset=6)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await late.next_event()
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == _beyond_end(6, 5)
    if running:
        await terminal.kill()


async def test_resume_with_a_cmd_is_an_invalid_argument(stub: Any, capsule: str) -> None:
    request = pb.PtyAttachRequest(sandbox_id=capsule, tag="pty-0000beef", cmd="/bin/true", resume=True)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _event in stub.PtyAttach(request, timeout=30):
            pass
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == "resume applies to attaching, not to starting (cmd)"


async def test_output_written_with_nobody_attached_is_kept(stub: Any, capsule: str) -> None:
    script = "stty raw -echo && printf ready && read go && seq 1 20000 && exec sleep 1000"
    first, _ = await start_terminal(stub, capsule, "/bin/sh", "-c", script)
    await first.expect(b"ready")
    first.call.cancel()

    async def unattached() -> bool:
        return await _streams(stub, capsule, first.tag) == 0

    await wait_until(unattached)
    await first.send(b"go\n")
    expected = b"ready" + SEQ_OUTPUT

    async def all_written() -> bool:
        return (await read_output(stub, capsule, first.tag, 0)).end_offset >= len(expected)

    await wait_until(all_written)
    resumed = await attach_terminal(stub, capsule, first.tag, resume=True, from_offset=0)
    await _read_until(resumed, len(expected))
    assert (resumed.first_offset, bytes(resumed.output)) == (0, expected)
    await resumed.kill()
    assert await resumed.wait_exit() == 137


# The recent screen, as a newcomer is shown it: PtyRead with queries neutralised


async def test_a_neutralised_read_shows_recent_output_with_queries_replaced(stub: Any, capsule: str) -> None:
    script = r"stty raw -echo && printf 'before\033[6nmiddle\033]11;?\007after\n' && exec sleep 1000"
    first, _ = await start_terminal(stub, capsule, "/bin/sh", "-c", script)
    await first.expect(b"after\n")
    # Live output is the program talking to the terminal now: passed through untouched.
    assert bytes(first.output) == b"before\x1b[6nmiddle\x1b]11;?\x07after\n"
    reply = await read_output(stub, capsule, first.tag, 0, neutralize_queries=True)
    assert reply.offset == 0
    assert reply.data == b"before" + b"\0" * 4 + b"middle" + b"\0" * 7 + b"after\n"
    await first.kill()


async def test_a_neutralised_read_replaces_a_query_written_in_two_parts(stub: Any, capsule: str) -> None:
    script = r"stty raw -echo && printf 'a\033[' && sleep 0.3 && printf '6nb' && exec sleep 1000"
    first, _ = await start_terminal(stub, capsule, "/bin/sh", "-c", script)
    await first.expect(b"6nb")
    reply = await read_output(stub, capsule, first.tag, 0, neutralize_queries=True)
    assert (reply.offset, reply.data) == (0, b"a\0\0\0\0b")
    await first.kill()


async def test_a_neutralised_read_after_exit_starts_where_the_buffer_does(
    small_stub: Any, small_capsule: str
) -> None:
    terminal = await _finished(small_stub, small_capsule, SEQ)
    reply = await read_output(
        small_stub, small_capsule, terminal.tag, 0, max_bytes=100_000, neutralize_queries=True
    )
    start = len(SEQ_OUTPUT) - SMALL_BUFFER
    assert (reply.offset, reply.data, reply.end_offset) == (start, SEQ_OUTPUT[start:], len(SEQ_OUTPUT))
    assert (reply.exited, reply.exit_code) == (True, 0)


# PtyRead


async def test_read_returns_the_requested_bytes(stub: Any, capsule: str) -> None:
    terminal = await _finished(stub, capsule, SEQ)
    reply = await read_output(stub, capsule, terminal.tag, 100, max_bytes=1000)
    assert (reply.data, reply.offset) == (SEQ_OUTPUT[100:1100], 100)
    assert (reply.end_offset, reply.exited, reply.exit_code) == (len(SEQ_OUTPUT), True, 0)


async def test_read_without_max_bytes_returns_64_kib(stub: Any, capsule: str) -> None:
    terminal = await _finished(stub, capsule, SEQ)
    reply = await read_output(stub, capsule, terminal.tag, 1)
    assert (reply.offset, reply.data) == (1, SEQ_OUTPUT[1 : 1 + 64 * 1024])


async def test_read_of_evicted_bytes_starts_where_the_buffer_does(
    small_stub: Any, small_capsule: str
) -> None:
    terminal = await _finished(small_stub, small_capsule, SEQ)
    reply = await read_output(small_stub, small_capsule, terminal.tag, 0, max_bytes=100_000)
    start = len(SEQ_OUTPUT) - SMALL_BUFFER
    assert (reply.offset, reply.data, reply.end_offset) == (start, SEQ_OUTPUT[start:], len(SEQ_OUTPUT))


async def test_read_at_the_end_is_empty(stub: Any, capsule: str) -> None:
    terminal, _ = await start_terminal(
        stub, capsule, "/bin/sh", "-c", "stty raw -echo && printf 12345 && sleep 1000"
    )
    await terminal.expect(b"12345")
    reply = await read_output(stub, capsule, terminal.tag, 5)
    assert (reply.data, reply.offset, reply.end_offset, reply.exited) == (b"", 5, 5, False)
    await terminal.kill()


async def test_read_beyond_the_end_is_an_invalid_argument(stub: Any, capsule: str) -> None:
    terminal = await _finished(stub, capsule, "stty raw -echo && printf 12345")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await read_output(stub, capsule, terminal.tag, 9)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == _beyond_end(9, 5)


async def test_read_of_an_unknown_session_is_not_found(stub: Any, capsule: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await read_output(stub, capsule, "pty-00000000", 0)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert caught.value.details() == "pty session pty-00000000 not found"


async def test_read_can_neutralise_queries(stub: Any, capsule: str) -> None:
    terminal = await _finished(stub, capsule, r"stty raw -echo && printf 'a\033[>0qb'")
    reply = await read_output(stub, capsule, terminal.tag, 0, neutralize_queries=True)
    assert reply.data == b"a\0\0\0\0\0b"


async def test_read_works_while_the_sandbox_is_paused(stub: Any, capsule: str) -> None:
    terminal, _ = await start_terminal(
        stub, capsule, "/bin/sh", "-c", "stty raw -echo && printf ready && sleep 1000"
    )
    await terminal.expect(b"ready")
    await stub.PauseSandbox(pb.PauseSandboxRequest(sandbox_id=capsule), timeout=30)
    try:
        reply = await read_output(stub, capsule, terminal.tag, 0)
        assert (reply.data, reply.exited) == (b"ready", False)
    finally:
        await stub.ResumeSandbox(pb.ResumeSandboxRequest(sandbox_id=capsule), timeout=30)
    await terminal.kill()


@pytest.mark.agent
def test_a_negative_replay_buffer_is_refused(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "hostagent", "--data-dir", str(tmp_path), "--replay-buffer", "-1"],
        cwd=REPO_ROOT,
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert b"--replay-buffer must be a number of bytes, 0 or more" in result.stderr


def test_the_replay_buffer_size_can_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOSTAGENT_REPLAY_BUFFER", "4096")
    assert parse_args([]).replay_buffer == 4096
    monkeypatch.delenv("HOSTAGENT_REPLAY_BUFFER")
    assert parse_args([]).replay_buffer == 1024 * 1024


async def test_output_waits_for_a_new_stream_when_the_last_one_goes_away(
    small_stub: Any, small_capsule: str
) -> None:
    """The worker reading a session died: the next stream must find every byte, not the newest 4 KiB."""
    script = "stty raw -echo && printf ready && read go && head -c 200000 /dev/zero | tr '\\0' z"
    first, _ = await start_terminal(small_stub, small_capsule, "/bin/sh", "-c", script)
    await first.expect(b"ready")  # typed before this, "go" would be echoed
    first.call.cancel()  # the reader is gone before the output starts
    while True:  # the agent has seen the stream go
        listing = await small_stub.ListPtySessions(pb.ListPtySessionsRequest(sandbox_id=small_capsule))
        if all(session.streams == 0 for session in listing.sessions if session.tag == first.tag):
            break
        await asyncio.sleep(0.05)
    await first.send(b"go\n")
    await asyncio.sleep(0.5)  # long enough for 200 KB to flood a 4 KiB buffer, were it read
    resumed = await attach_terminal(small_stub, small_capsule, first.tag, resume=True, from_offset=0)
    assert await resumed.wait_exit() == 0
    assert resumed.missed == []
    assert bytes(resumed.output) == b"ready" + b"z" * 200000
