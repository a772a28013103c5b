"""File RPCs in every runtime: stat, list, mkdir, remove, streamed reads and writes, their errors."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from protos import hostagent_pb2 as pb
from tests.support.hostagent import HostAgentProcess

pytestmark = pytest.mark.timeout(90)

CHUNK = 64 * 1024


async def write(stub: Any, sandbox_id: str, path: str, data: bytes, mode: int = 0) -> Any:
    """A WriteFile call as the control plane makes it: `start`, then data once the agent says the
    file is open (a refused write then ends before any data is in flight)."""
    call = stub.WriteFile(timeout=30)
    await call.write(
        pb.WriteFileRequest(start=pb.WriteFileStart(sandbox_id=sandbox_id, path=path, mode=mode))
    )
    if ("wrenn-write-ready", "1") in tuple(await call.initial_metadata() or ()):
        for offset in range(0, len(data), CHUNK):
            await call.write(pb.WriteFileRequest(data=data[offset : offset + CHUNK]))
        await call.write(pb.WriteFileRequest(end=True))
        await call.done_writing()
    return (await call).entry


async def read(stub: Any, sandbox_id: str, path: str) -> tuple[Any, bytes]:
    messages = [
        m async for m in stub.ReadFile(pb.FilePathRequest(sandbox_id=sandbox_id, path=path), timeout=30)
    ]
    assert messages[0].WhichOneof("part") == "entry"
    return messages[0].entry, b"".join(m.data for m in messages[1:])


async def listing(stub: Any, sandbox_id: str, path: str, depth: int = 1) -> list[Any]:
    request = pb.ListDirRequest(sandbox_id=sandbox_id, path=path, depth=depth)
    return list((await stub.ListDir(request, timeout=30)).entries)


async def fails(call: Any, code: grpc.StatusCode) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == code, caught.value.details()
    return caught.value.details() or ""


async def test_a_written_file_reads_back_with_its_entry(stub: Any, capsule: str) -> None:
    data = os.urandom(3 * CHUNK + 17)
    entry = await write(stub, capsule, "/root/sub/dir/data.bin", data, mode=0o600)
    assert (entry.path, entry.name, entry.type, entry.size) == (
        "/root/sub/dir/data.bin",
        "data.bin",
        "file",
        len(data),
    )
    assert entry.permissions == "-rw-------"
    header, body = await read(stub, capsule, "/root/sub/dir/data.bin")
    assert body == data
    assert header.size == len(data)


async def test_relative_paths_are_in_the_users_home(stub: Any, capsule: str) -> None:
    await write(stub, capsule, "notes.txt", b"hello")
    entry, body = await read(stub, capsule, "/root/notes.txt")
    assert body == b"hello"
    assert entry.path == "/root/notes.txt"


async def test_an_existing_file_is_replaced(stub: Any, capsule: str) -> None:
    await write(stub, capsule, "/tmp/f", b"a much longer first version")
    await write(stub, capsule, "/tmp/f", b"short")
    assert (await read(stub, capsule, "/tmp/f"))[1] == b"short"


async def test_an_empty_file_is_written_and_read(stub: Any, capsule: str) -> None:
    await write(stub, capsule, "/tmp/empty", b"")
    entry, body = await read(stub, capsule, "/tmp/empty")
    assert (entry.size, body) == (0, b"")


async def test_list_gives_children_sorted_with_their_metadata(stub: Any, capsule: str) -> None:
    await write(stub, capsule, "/root/l/b.txt", b"bb")
    await write(stub, capsule, "/root/l/a/inner.txt", b"i")
    entries = await listing(stub, capsule, "/root/l")
    assert [(e.name, e.type, e.path) for e in entries] == [
        ("a", "directory", "/root/l/a"),
        ("b.txt", "file", "/root/l/b.txt"),
    ]
    b = entries[1]
    assert b.size == 2
    assert b.mode == 0o644
    assert b.permissions == "-rw-r--r--"
    assert b.modified_at > 1_600_000_000
    assert b.owner
    assert b.group


async def test_depth_zero_and_one_list_children_and_two_goes_deeper(stub: Any, capsule: str) -> None:
    await write(stub, capsule, "/root/d/x/y/z.txt", b"z")
    assert [e.path for e in await listing(stub, capsule, "/root/d", 0)] == ["/root/d/x"]
    assert [e.path for e in await listing(stub, capsule, "/root/d", 1)] == ["/root/d/x"]
    assert [e.path for e in await listing(stub, capsule, "/root/d", 2)] == ["/root/d/x", "/root/d/x/y"]


async def test_a_symlink_is_listed_as_one_with_its_target(stub: Any, capsule: str) -> None:
    # Relative: exec starts in the home, which on the process runtime is not /root.
    await run_in(stub, capsule, "mkdir -p s && ln -s / s/top")
    (entry,) = await listing(stub, capsule, "/root/s", 3)
    assert (entry.type, entry.symlink_target) == ("symlink", "/")


async def test_mkdir_makes_parents_and_answers_already_exists_after(stub: Any, capsule: str) -> None:
    made = await stub.MakeDir(pb.FilePathRequest(sandbox_id=capsule, path="/root/m/n/o"), timeout=30)
    assert (made.entry.type, made.entry.path) == ("directory", "/root/m/n/o")
    details = await fails(
        stub.MakeDir(pb.FilePathRequest(sandbox_id=capsule, path="/root/m/n/o"), timeout=30),
        grpc.StatusCode.ALREADY_EXISTS,
    )
    assert "already exists" in details


async def test_stat_names_the_entry(stub: Any, capsule: str) -> None:
    await write(stub, capsule, "/tmp/s.txt", b"1234")
    entry = (await stub.StatPath(pb.FilePathRequest(sandbox_id=capsule, path="/tmp/s.txt"), timeout=30)).entry
    assert (entry.name, entry.size) == ("s.txt", 4)


async def test_remove_takes_files_and_whole_trees_and_404s_after(stub: Any, capsule: str) -> None:
    await write(stub, capsule, "/root/r/deep/f", b"x")
    await write(stub, capsule, "/root/r/g", b"y")
    await stub.RemovePath(pb.FilePathRequest(sandbox_id=capsule, path="/root/r/g"), timeout=30)
    await stub.RemovePath(pb.FilePathRequest(sandbox_id=capsule, path="/root/r"), timeout=30)
    await fails(
        stub.RemovePath(pb.FilePathRequest(sandbox_id=capsule, path="/root/r"), timeout=30),
        grpc.StatusCode.NOT_FOUND,
    )
    await fails(read(stub, capsule, "/root/r/g"), grpc.StatusCode.NOT_FOUND)


async def test_errors_are_typed(stub: Any, capsule: str) -> None:
    await write(stub, capsule, "/root/e/file", b"x")
    await fails(read(stub, capsule, "/root/e/missing"), grpc.StatusCode.NOT_FOUND)
    assert (
        "directory"
        in (await fails(read(stub, capsule, "/root/e"), grpc.StatusCode.FAILED_PRECONDITION)).lower()
    )
    await fails(listing(stub, capsule, "/root/e/file"), grpc.StatusCode.FAILED_PRECONDITION)
    await fails(listing(stub, capsule, "/root/e/none"), grpc.StatusCode.NOT_FOUND)
    await fails(write(stub, capsule, "/root/e", b"x"), grpc.StatusCode.FAILED_PRECONDITION)
    await fails(write(stub, capsule, "/root/e/file/below", b"x"), grpc.StatusCode.FAILED_PRECONDITION)


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("", "path is required"),
        ("/a\x00b", "NUL"),
        ("/" + "a" * 5000, "at most 4096"),
        ("/" + "b" * 300, "longer than 255"),
    ],
)
async def test_bad_paths_are_refused_with_the_reason(
    stub: Any, capsule: str, path: str, message: str
) -> None:
    request = pb.FilePathRequest(sandbox_id=capsule, path=path)
    assert message in await fails(stub.StatPath(request, timeout=30), grpc.StatusCode.INVALID_ARGUMENT)


async def test_removing_the_root_is_refused(stub: Any, capsule: str) -> None:
    for path in ("/", "/root/../..", "//"):
        request = pb.FilePathRequest(sandbox_id=capsule, path=path)
        assert "refusing" in await fails(
            stub.RemovePath(request, timeout=30), grpc.StatusCode.INVALID_ARGUMENT
        )


async def test_unknown_sandbox_is_not_found(stub: Any) -> None:
    await fails(
        stub.StatPath(pb.FilePathRequest(sandbox_id="sb-nosuchcapsule", path="/root"), timeout=30),
        grpc.StatusCode.NOT_FOUND,
    )


async def test_a_write_must_start_with_start(stub: Any, capsule: str) -> None:
    async def requests() -> AsyncIterator[pb.WriteFileRequest]:
        yield pb.WriteFileRequest(data=b"x")

    await fails(stub.WriteFile(requests(), timeout=30), grpc.StatusCode.INVALID_ARGUMENT)


async def test_a_paused_capsule_refuses_file_calls(stub: Any, capsule: str) -> None:
    await stub.PauseSandbox(pb.PauseSandboxRequest(sandbox_id=capsule), timeout=30)
    try:
        details = await fails(listing(stub, capsule, "/root"), grpc.StatusCode.FAILED_PRECONDITION)
        assert "paused" in details
    finally:
        await stub.ResumeSandbox(pb.ResumeSandboxRequest(sandbox_id=capsule), timeout=30)


async def run_in(stub: Any, sandbox_id: str, script: str) -> bytes:
    request = pb.ProcessStartRequest(
        sandbox_id=sandbox_id, tag=f"proc-{os.urandom(4).hex()}", cmd="/bin/sh", args=["-c", script]
    )
    events = [e async for e in stub.ProcessStart(request, timeout=30)]
    assert events[-1].exited.exit_code == 0, events
    return b"".join(e.output.data for e in events if e.HasField("output"))


def agent_rss_kib(agent: HostAgentProcess) -> int:
    with open(f"/proc/{agent.proc.pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


async def test_an_abandoned_write_leaves_the_old_file_whole(stub: Any, capsule: str) -> None:
    await write(stub, capsule, "/root/keep.txt", b"old")
    call = stub.WriteFile(timeout=30)
    await call.write(pb.WriteFileRequest(start=pb.WriteFileStart(sandbox_id=capsule, path="/root/keep.txt")))
    await call.initial_metadata()
    await call.write(pb.WriteFileRequest(data=b"new but never finished"))
    await call.done_writing()  # or cancelled, or broken: without `end`, the write is abandoned
    await fails(call, grpc.StatusCode.FAILED_PRECONDITION)
    assert (await read(stub, capsule, "/root/keep.txt"))[1] == b"old"
    names = [e.name for e in await listing(stub, capsule, "/root")]
    assert not [name for name in names if ".wrenn-" in name]
