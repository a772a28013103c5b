"""The incremental multipart reader: parts whole at any read size, and each malformed body refused."""

from __future__ import annotations

import asyncio
import os

import pytest

from capsules.multipart import MultipartError, MultipartReader, boundary_of

pytestmark = pytest.mark.timeout(30)

BOUNDARY = "b0undary-x"
PAYLOAD = os.urandom(200_003) + b"\r\n--b0undary" + os.urandom(1000)


def body(*parts: tuple[str, str | None, bytes], preamble: bytes = b"") -> bytes:
    out = preamble
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


def parse(raw: bytes, step: int) -> dict[str, tuple[str | None, bytes]]:
    async def run() -> dict[str, tuple[str | None, bytes]]:
        position = 0

        async def read(size: int) -> bytes:
            nonlocal position
            chunk = raw[position : position + min(size, step)]
            position += len(chunk)
            return chunk

        reader = MultipartReader(read, BOUNDARY.encode())
        found = {}
        while (part := await reader.next_part()) is not None:
            found[part.name] = (part.filename, await reader.read_all(10**7))
        return found

    return asyncio.run(run())


@pytest.mark.parametrize("step", [1, 3, 17, 4096, 65536, 1 << 20])
def test_parts_come_out_whole_whatever_the_read_size(step: int) -> None:
    raw = body(("path", None, "/root/ä b".encode()), ("file", "upload.bin", PAYLOAD), preamble=b"ignored\r\n")
    if step == 1:
        raw = body(("path", None, b"/p"), ("file", "f", PAYLOAD[:3000]))
    found = parse(raw, step)
    assert found["path"][1] in ("/root/ä b".encode(), b"/p")
    assert found["file"][0] in ("upload.bin", "f")
    assert found["file"][1] in (PAYLOAD, PAYLOAD[:3000])


def test_an_empty_file_part() -> None:
    assert parse(body(("path", None, b"/x"), ("file", "f", b"")), 100)["file"] == ("f", b"")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"no boundary at all", "ends before its boundary"),
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="a"\r\n\r\nunterminated'.encode(),
            "no closing",
        ),
        (
            f"--{BOUNDARY}\r\nContent-Type: text/plain\r\n\r\nx\r\n--{BOUNDARY}--".encode(),
            "Content-Disposition",
        ),
        (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="a"'.encode(), "headers"),
    ],
)
def test_malformed_bodies_say_what_is_wrong(raw: bytes, message: str) -> None:
    with pytest.raises(MultipartError, match=message):
        parse(raw, 64)


def test_the_content_type_must_be_multipart_with_a_boundary() -> None:
    assert boundary_of(f'multipart/form-data; boundary="{BOUNDARY}"') == BOUNDARY.encode()
    with pytest.raises(MultipartError, match="multipart/form-data"):
        boundary_of("application/json")
    with pytest.raises(MultipartError, match="no boundary"):
        boundary_of("multipart/form-data")
