"""ListPtySessions: who started what, how many streams watch it, how much went in and out."""

from __future__ import annotations

import time
from typing import Any

import grpc
import pytest

from protos import hostagent_pb2 as pb
from tests.support.hostagent import attach_terminal, new_tag, start_terminal
from tests.support.polling import wait_until

pytestmark = pytest.mark.timeout(60)


async def _sessions(stub: Any, sandbox_id: str = "") -> dict[str, Any]:
    response = await stub.ListPtySessions(pb.ListPtySessionsRequest(sandbox_id=sandbox_id), timeout=30)
    return {session.tag: session for session in response.sessions}


async def _session(stub: Any, sandbox_id: str, tag: str) -> Any:
    return (await _sessions(stub, sandbox_id))[tag]


async def test_a_session_is_listed_with_what_started_it(stub: Any, capsule: str) -> None:
    before_ms = time.time_ns() // 1_000_000
    terminal, started = await start_terminal(stub, capsule, "/bin/cat", "-u", owner="user:alice")
    after_ms = time.time_ns() // 1_000_000
    info = await _session(stub, capsule, terminal.tag)
    assert (info.sandbox_id, info.tag, info.pid) == (capsule, terminal.tag, started.pid)
    assert (info.cmd, list(info.args), info.owner) == ("/bin/cat", ["-u"], "user:alice")
    assert (info.exited, info.exit_code, info.streams) == (False, 0, 1)
    assert before_ms <= info.started_at_ms <= after_ms
    await terminal.kill()


async def test_byte_counters_grow_with_input_and_output(stub: Any, capsule: str) -> None:
    terminal, _ = await start_terminal(stub, capsule, "/bin/cat")
    info = await _session(stub, capsule, terminal.tag)
    assert (info.bytes_in, info.bytes_out) == (0, 0)
    await terminal.send(b"hello\n")
    await terminal.expect(b"hello\r\nhello\r\n")  # the terminal's echo, then cat's copy
    info = await _session(stub, capsule, terminal.tag)
    assert info.bytes_in == len(b"hello\n")
    assert info.bytes_out >= len(terminal.output)
    await terminal.send(b"again\n")
    await terminal.expect(b"again\r\nagain\r\n")
    later = await _session(stub, capsule, terminal.tag)
    assert later.bytes_in == len(b"hello\nagain\n")
    assert later.bytes_out > info.bytes_out
    await terminal.kill()


async def test_streams_counts_the_attached_streams(stub: Any, capsule: str) -> None:
    first, _ = await start_terminal(stub, capsule, "/bin/cat")
    second = await attach_terminal(stub, capsule, first.tag)
    assert (await _session(stub, capsule, first.tag)).streams == 2
    second.call.cancel()

    async def one_stream_left() -> bool:
        return (await _session(stub, capsule, first.tag)).streams == 1

    await wait_until(one_stream_left)
    await first.kill()


async def test_a_recently_exited_session_is_listed_with_its_code(stub: Any, capsule: str) -> None:
    terminal, _ = await start_terminal(stub, capsule, "/bin/sh", "-c", "exit 7", owner="key:wrn_ab12cd34")
    assert await terminal.wait_exit() == 7
    info = await _session(stub, capsule, terminal.tag)
    assert (info.exited, info.exit_code, info.streams, info.owner) == (True, 7, 0, "key:wrn_ab12cd34")


async def test_sessions_of_one_sandbox_or_of_all(stub: Any, capsule: str, other_capsule: str) -> None:
    mine, _ = await start_terminal(stub, capsule, "/bin/cat")
    theirs, _ = await start_terminal(stub, other_capsule, "/bin/cat")
    assert list(await _sessions(stub, capsule)) == [mine.tag]
    everything = await _sessions(stub)
    assert {mine.tag, theirs.tag} <= set(everything)
    assert everything[theirs.tag].sandbox_id == other_capsule
    await mine.kill()
    await theirs.kill()


async def test_listing_an_unknown_sandbox_is_not_found(stub: Any) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _sessions(stub, "no-such-capsule")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert caught.value.details() == "sandbox no-such-capsule not found on this host"


async def test_an_owner_over_256_characters_is_rejected(stub: Any, capsule: str) -> None:
    request = pb.PtyAttachRequest(sandbox_id=capsule, tag=new_tag(), cmd="/bin/true", owner="x" * 257)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _event in stub.PtyAttach(request, timeout=30):
            pass
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == "owner must be at most 256 characters"
