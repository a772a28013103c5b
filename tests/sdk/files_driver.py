"""Drives every `capsule.files` call of Wrenn's SDK 0.3.0, sync and async, as a user would.

Run like tests/sdk/driver.py (the SDK virtualenv's python -I, outside the repository, with
WRENN_BASE_URL and WRENN_API_KEY set). stdin: ``{"capsule_id": …, "dir": …, "stream_mb": …}``.
stdout: one JSON line per check, ``{"check": name, "ok": true}`` or ``{"check": name, "ok":
false, "error": …}``, then ``{"done": true}``. A check's failure does not stop the others.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
import traceback
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

CHUNK = 256 * 1024


def emit(**line: Any) -> None:
    print(json.dumps(line), flush=True)


def check(name: str, run: Callable[[], Any]) -> None:
    try:
        detail = run()
    except Exception as exc:  # every failure is reported, and the next check runs
        emit(check=name, ok=False, error=f"{type(exc).__name__}: {exc}", trace=traceback.format_exc()[-1500:])
        return
    emit(check=name, ok=True, detail=detail)


def pattern(size: int) -> Iterator[bytes]:
    """`size` bytes, generated chunk by chunk (never held whole)."""
    block = hashlib.sha256(b"wrenn").digest() * (CHUNK // 32)
    sent = 0
    while sent < size:
        piece = block[: min(CHUNK, size - sent)]
        sent += len(piece)
        yield piece


def digest(chunks: Iterator[bytes]) -> tuple[int, str]:
    hasher, size = hashlib.sha256(), 0
    for chunk in chunks:
        size += len(chunk)
        hasher.update(chunk)
    return size, hasher.hexdigest()


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def sync_checks(sdk: Any, capsule: Any, d: str, stream_mb: int) -> None:
    files = capsule.files
    binary = bytes(range(256)) * 300

    def text() -> None:
        files.write(f"{d}/hello.txt", "hello ✓")
        expect(files.read(f"{d}/hello.txt") == "hello ✓", "text differs")

    def raw() -> None:
        files.write(f"{d}/bin/data.bin", binary)  # its parent is created
        expect(files.read_bytes(f"{d}/bin/data.bin") == binary, "bytes differ")

    check("write_and_read_text", text)
    check("write_and_read_bytes", raw)

    def listing() -> list[str]:
        entries = files.list(d)
        names = sorted(e.name for e in entries)
        expect(names == ["bin", "hello.txt"], f"list: {names}")
        hello = next(e for e in entries if e.name == "hello.txt")
        expect(hello.type.value == "file" and hello.size == len("hello ✓".encode()), f"entry: {hello}")
        expect(hello.path == f"{d}/hello.txt" and hello.permissions == "-rw-r--r--", f"entry: {hello}")
        expect(hello.owner == "root" and hello.modified_at > 1_600_000_000, f"entry: {hello}")
        deep = sorted(e.path for e in files.list(d, depth=2))
        expect(deep == [f"{d}/bin", f"{d}/bin/data.bin", f"{d}/hello.txt"], f"depth 2: {deep}")
        return names

    check("list", listing)
    check(
        "exists",
        lambda: expect(
            files.exists(f"{d}/hello.txt")
            and files.exists(f"{d}/bin")
            and not files.exists(f"{d}/missing")
            and not files.exists(f"{d}/nodir/missing"),
            "exists",
        ),
    )

    def make_dir() -> None:
        entry = files.make_dir(f"{d}/made/deep")
        expect(entry.type.value == "directory" and entry.path == f"{d}/made/deep", f"mkdir: {entry}")
        again = files.make_dir(f"{d}/made/deep")  # already there: the SDK lists it after the 409
        expect(again.type.value == "directory" and again.name == "deep", f"mkdir again: {again}")

    check("make_dir", make_dir)

    def remove() -> None:
        files.remove(f"{d}/hello.txt")
        expect(not files.exists(f"{d}/hello.txt"), "removed file still there")
        files.remove(f"{d}/made")
        expect(not files.exists(f"{d}/made"), "removed directory still there")
        try:
            files.remove(f"{d}/hello.txt")
        except sdk.exceptions.WrennNotFoundError:
            return
        raise AssertionError("removing a missing file did not raise WrennNotFoundError")

    check("remove", remove)

    def read_missing() -> None:
        try:
            files.read(f"{d}/nothing-here")
        except sdk.exceptions.WrennNotFoundError as exc:
            expect("No such file" in exc.message, exc.message)
            return
        raise AssertionError("reading a missing file did not raise WrennNotFoundError")

    check("read_missing", read_missing)

    def streams() -> dict[str, Any]:
        size = stream_mb << 20
        files.upload_stream(f"{d}/stream.bin", pattern(size))
        got = digest(files.download_stream(f"{d}/stream.bin"))
        expect(got == digest(pattern(size)), f"stream round trip: {got}")
        return {"bytes": got[0]}

    check("upload_and_download_stream", streams)


async def async_checks(sdk: Any, capsule: Any, d: str) -> None:
    files = capsule.files

    async def run(name: str, body: Callable[[], Any]) -> None:
        try:
            await body()
        except Exception as exc:
            emit(
                check=name,
                ok=False,
                error=f"{type(exc).__name__}: {exc}",
                trace=traceback.format_exc()[-1500:],
            )
            return
        emit(check=name, ok=True)

    async def basics() -> None:
        await files.write(f"{d}/a.txt", b"async")
        expect(await files.read(f"{d}/a.txt") == "async", "async read")
        expect(await files.read_bytes(f"{d}/a.txt") == b"async", "async read_bytes")
        expect([e.name for e in await files.list(d)] == ["a.txt"], "async list")
        expect(await files.exists(f"{d}/a.txt") and not await files.exists(f"{d}/b.txt"), "async exists")
        entry = await files.make_dir(f"{d}/dir")
        expect((await files.make_dir(f"{d}/dir")).path == entry.path, "async make_dir twice")
        await files.remove(f"{d}/a.txt")
        expect(not await files.exists(f"{d}/a.txt"), "async remove")

    async def streams() -> None:
        async def chunks() -> AsyncIterator[bytes]:
            for piece in pattern(3 << 20):
                yield piece

        await files.upload_stream(f"{d}/s.bin", chunks())
        hasher, size = hashlib.sha256(), 0
        async for chunk in files.download_stream(f"{d}/s.bin"):
            hasher.update(chunk)
            size += len(chunk)
        expect((size, hasher.hexdigest()) == digest(pattern(3 << 20)), "async stream round trip")

    await run("async_basics", basics)
    await run("async_streams", streams)


def main() -> int:
    import importlib

    sdk: Any = importlib.import_module("wrenn")
    importlib.import_module("wrenn.exceptions")
    plan = json.loads(sys.stdin.read())
    capsule = sdk.Capsule.connect(plan["capsule_id"])
    sync_checks(sdk, capsule, plan["dir"], int(plan.get("stream_mb", 8)))

    async def run_async() -> None:
        async_capsule = await sdk.AsyncCapsule.connect(plan["capsule_id"])
        await async_checks(sdk, async_capsule, plan["dir"] + "-async")

    asyncio.run(run_async())
    emit(done=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
