"""PtyInput: one session's input, resizes and kills on one stream, each op acknowledged in order."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from protos import hostagent_pb2 as pb
from pty.input import AgentStream, Op, OpFailed
from tests.support.hostagent import start_terminal

pytestmark = pytest.mark.timeout(60)


async def ack(call: Any, request: pb.PtyInputRequest) -> tuple[int, str]:
    await call.write(request)
    answer = await call.read()
    return answer.code, answer.message


async def test_input_resize_and_kill_are_applied_in_order(stub: Any, capsule: str) -> None:
    terminal, _ = await start_terminal(
        stub, capsule, "/bin/sh", "-c", "read a; stty size; read b; echo got-$a-$b; sleep 1000"
    )
    call = stub.PtyInput()
    first = pb.PtyInputRequest(sandbox_id=capsule, tag=terminal.tag, resize=pb.PtySize(cols=101, rows=33))
    assert await ack(call, first) == (0, "")
    for data in (b"one\n", b"tw", b"o\n"):
        assert await ack(call, pb.PtyInputRequest(data=data)) == (0, "")
    await terminal.expect(b"got-one-two")
    assert b"33 101" in terminal.output  # the resize, acked before the input that runs stty
    assert await ack(call, pb.PtyInputRequest(kill=True)) == (0, "")
    assert await terminal.wait_exit() == 137
    await call.done_writing()
    assert await call.read() == grpc.aio.EOF  # type: ignore[attr-defined]  # missing from grpc-stubs
    assert await call.code() == grpc.StatusCode.OK


async def test_a_failed_op_is_acked_with_its_error_and_the_stream_goes_on(stub: Any, capsule: str) -> None:
    terminal, _ = await start_terminal(stub, capsule, "/bin/sh", "-c", "read line; echo got-$line")
    call = stub.PtyInput()
    bad = pb.PtyInputRequest(sandbox_id=capsule, tag=terminal.tag, resize=pb.PtySize(cols=0, rows=24))
    invalid = grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert await ack(call, bad) == (invalid, "cols and rows must be between 1 and 1000, got 0x24")
    assert await ack(call, pb.PtyInputRequest(data=b"still\n")) == (0, "")
    await terminal.expect(b"got-still")
    assert await terminal.wait_exit() == 0
    precondition = grpc.StatusCode.FAILED_PRECONDITION.value[0]
    late = pb.PtyInputRequest(data=b"late\n")
    assert await ack(call, late) == (precondition, f"pty session {terminal.tag} has exited")
    call.cancel()


@pytest.mark.parametrize(
    ("sandbox", "tag", "message"),
    [
        ("no-such-capsule", "pty-00000000", "sandbox no-such-capsule not found on this host"),
        (None, "pty-deadbeef", "pty session pty-deadbeef not found"),
    ],
)
async def test_a_stream_naming_no_session_ends_not_found(
    stub: Any, capsule: str, sandbox: str | None, tag: str, message: str
) -> None:
    call = stub.PtyInput()
    await call.write(pb.PtyInputRequest(sandbox_id=sandbox or capsule, tag=tag, data=b"x"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call.read()
    assert (caught.value.code(), caught.value.details()) == (grpc.StatusCode.NOT_FOUND, message)


async def test_a_first_request_without_a_tag_is_invalid(stub: Any, capsule: str) -> None:
    call = stub.PtyInput()
    await call.write(pb.PtyInputRequest(sandbox_id=capsule, data=b"x"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call.read()
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == "tag is required"


# The control plane's side of the stream (pty.input.AgentStream), against the real agent.


async def test_an_idle_stream_is_closed_and_the_next_op_opens_another(stub: Any, capsule: str) -> None:
    terminal, _ = await start_terminal(stub, capsule, "/bin/sh", "-c", "read a; read b; echo got-$a-$b")
    stream = AgentStream(stub, capsule, terminal.tag, idle_close=0.2)
    await stream.send(Op("input", data=b"one\n"))
    assert stream.open
    await asyncio.sleep(0.1)
    await stream.send(Op("resize", cols=90, rows=30))
    await asyncio.sleep(0.6)
    assert not stream.open  # idle: closed
    await stream.send(Op("input", data=b"two\n"))
    await terminal.expect(b"got-one-two")
    assert await terminal.wait_exit() == 0
    with pytest.raises(OpFailed, match=f"^pty session {terminal.tag} has exited$"):
        await stream.send(Op("input", data=b"late\n"))
    stream.close()


async def test_a_stream_to_an_unknown_session_fails_each_op_with_its_reason(stub: Any, capsule: str) -> None:
    stream = AgentStream(stub, capsule, "pty-deadbeef")
    for _ in range(2):  # a stream that ended is replaced, and fails the same way
        with pytest.raises(OpFailed, match=r"^pty session pty-deadbeef not found$"):
            await stream.send(Op("kill"))
        assert not stream.open
