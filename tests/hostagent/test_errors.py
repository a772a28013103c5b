"""Every refused request gets a specific status and message (both runtimes)."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from protos import hostagent_pb2 as pb
from tests.support.hostagent import Terminal, new_tag, start_terminal

pytestmark = pytest.mark.timeout(60)


async def _status(awaitable: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await awaitable
    return caught.value.code(), caught.value.details() or ""


async def _stream_status(call: Any) -> tuple[grpc.StatusCode, str]:
    async def drain() -> None:
        async for _event in call:
            pass

    return await _status(drain())


def _start(stub: Any, sandbox_id: str, cmd: str = "/bin/sh", **fields: Any) -> Any:
    fields.setdefault("tag", new_tag())
    return stub.PtyAttach(pb.PtyAttachRequest(sandbox_id=sandbox_id, cmd=cmd, **fields), timeout=30)


async def test_invalid_sandbox_id_is_rejected(stub: Any) -> None:
    code, message = await _status(stub.CreateSandbox(pb.CreateSandboxRequest(sandbox_id="../etc")))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert message.startswith("invalid sandbox_id '../etc'")


async def test_destroying_an_unknown_sandbox_is_not_found(stub: Any) -> None:
    request = pb.DestroySandboxRequest(sandbox_id="no-such-capsule")
    code, message = await _status(stub.DestroySandbox(request))
    assert (code, message) == (grpc.StatusCode.NOT_FOUND, "sandbox no-such-capsule not found on this host")


async def test_pty_calls_on_an_unknown_sandbox_are_not_found(stub: Any) -> None:
    expected = (grpc.StatusCode.NOT_FOUND, "sandbox no-such-capsule not found on this host")
    assert await _stream_status(_start(stub, "no-such-capsule")) == expected
    request = pb.PtyKillRequest(sandbox_id="no-such-capsule", tag="pty-00000000")
    assert await _status(stub.PtyKill(request)) == expected


async def test_attaching_to_an_unknown_tag_is_not_found(stub: Any, capsule: str) -> None:
    call = stub.PtyAttach(pb.PtyAttachRequest(sandbox_id=capsule, tag="pty-deadbeef"))
    code, message = await _stream_status(call)
    assert (code, message) == (grpc.StatusCode.NOT_FOUND, "pty session pty-deadbeef not found")


async def test_killing_an_unknown_tag_is_not_found(stub: Any, capsule: str) -> None:
    code, message = await _status(stub.PtyKill(pb.PtyKillRequest(sandbox_id=capsule, tag="pty-deadbeef")))
    assert (code, message) == (grpc.StatusCode.NOT_FOUND, "pty session pty-deadbeef not found")


@pytest.mark.parametrize(
    "op",
    [pb.PtyInputRequest(data=b"x"), pb.PtyInputRequest(resize=pb.PtySize(cols=80, rows=24))],
    ids=["input", "resize"],
)
async def test_input_and_resizes_for_an_unknown_tag_are_not_found(
    stub: Any, capsule: str, op: pb.PtyInputRequest
) -> None:
    unknown = Terminal(stub, capsule, "pty-deadbeef", call=None)
    code, message = await _status(unknown.input_op(op))
    assert (code, message) == (grpc.StatusCode.NOT_FOUND, "pty session pty-deadbeef not found")


async def test_starting_an_existing_tag_is_already_exists(stub: Any, capsule: str) -> None:
    terminal, _ = await start_terminal(stub, capsule, "/bin/cat")
    code, message = await _stream_status(_start(stub, capsule, tag=terminal.tag))
    assert (code, message) == (grpc.StatusCode.ALREADY_EXISTS, f"pty session {terminal.tag} already exists")
    await terminal.kill()


async def test_a_missing_tag_is_rejected(stub: Any, capsule: str) -> None:
    code, message = await _stream_status(_start(stub, capsule, tag=""))
    assert (code, message) == (grpc.StatusCode.INVALID_ARGUMENT, "tag is required")


async def test_a_missing_binary_fails_the_start(stub: Any, capsule: str) -> None:
    code, message = await _stream_status(_start(stub, capsule, cmd="/nope"))
    assert (code, message) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "cannot start '/nope': No such file or directory",
    )


async def test_a_command_not_on_path_fails_the_start(stub: Any, capsule: str) -> None:
    code, message = await _stream_status(_start(stub, capsule, cmd="no-such-command-xyz"))
    assert (code, message) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "cannot start 'no-such-command-xyz': No such file or directory",
    )


async def test_a_missing_cwd_fails_the_start(stub: Any, capsule: str) -> None:
    code, message = await _stream_status(_start(stub, capsule, cwd="no-such-dir"))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert message.startswith("cannot start '/bin/sh': cannot change directory to '")
    assert message.endswith("/no-such-dir': No such file or directory")


async def test_an_unknown_user_is_rejected(stub: Any, capsule: str) -> None:
    code, message = await _stream_status(_start(stub, capsule, user="no-such-user"))
    assert (code, message) == (grpc.StatusCode.INVALID_ARGUMENT, "unknown user 'no-such-user'")


@pytest.mark.parametrize(("cols", "rows"), [(1001, 24), (80, 1001)])
async def test_a_start_size_over_1000_is_rejected(stub: Any, capsule: str, cols: int, rows: int) -> None:
    code, message = await _stream_status(_start(stub, capsule, cols=cols, rows=rows))
    assert (code, message) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        f"cols and rows must be between 1 and 1000, got {cols}x{rows}",
    )


@pytest.mark.parametrize(("cols", "rows"), [(0, 24), (80, 0), (1001, 24)])
async def test_a_resize_out_of_range_is_rejected(stub: Any, capsule: str, cols: int, rows: int) -> None:
    terminal, _ = await start_terminal(stub, capsule, "/bin/cat")
    code, message = await terminal.input_op(pb.PtyInputRequest(resize=pb.PtySize(cols=cols, rows=rows)))
    assert (code, message) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        f"cols and rows must be between 1 and 1000, got {cols}x{rows}",
    )
    await terminal.kill()


async def test_an_environment_name_with_equals_is_rejected(stub: Any, capsule: str) -> None:
    code, message = await _stream_status(_start(stub, capsule, envs={"A=B": "c"}))
    assert (code, message) == (grpc.StatusCode.INVALID_ARGUMENT, "invalid environment variable name 'A=B'")


async def test_input_after_exit_is_refused(stub: Any, capsule: str) -> None:
    terminal, _ = await start_terminal(stub, capsule, "/bin/sh", "-c", "exit 0")
    await terminal.wait_exit()
    code, message = await terminal.input_op(pb.PtyInputRequest(data=b"late\n"))
    assert (code, message) == (grpc.StatusCode.FAILED_PRECONDITION, f"pty session {terminal.tag} has exited")
