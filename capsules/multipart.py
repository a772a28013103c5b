"""An incremental multipart/form-data reader over an async byte source, for uploads of any size.

Django parses a multipart body only once all of it is spooled (memory, then a temporary file),
and daphne holds all of it before Django starts; the upload views (capsules/api/file_views.py)
read the body themselves instead, a chunk at a time, through this reader: memory stays at about
one chunk and a boundary whatever the upload's size. Only what uploads need: parts with a
Content-Disposition name (and filename), their bytes streamed; no nested multipart, no charset.
"""

from __future__ import annotations

import email.parser
import email.policy
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

READ_SIZE = 64 * 1024
MAX_HEADERS = 16 * 1024
MAX_BOUNDARY = 200

Reader = Callable[[int], Awaitable[bytes]]


class MultipartError(Exception):
    """The body is not the multipart/form-data it claims to be; the message says how."""


def boundary_of(content_type: str) -> bytes:
    """The boundary of a `multipart/form-data; boundary=...` content type, or MultipartError."""
    message = email.parser.HeaderParser(policy=email.policy.HTTP).parsestr(
        f"Content-Type: {content_type}\r\n\r\n"
    )
    if message.get_content_type() != "multipart/form-data":
        raise MultipartError("expected a multipart/form-data body (fields `path` and `file`)")
    boundary = message.get_param("boundary")
    if not isinstance(boundary, str) or not boundary:
        raise MultipartError("the multipart/form-data content type has no boundary")
    if len(boundary) > MAX_BOUNDARY:
        raise MultipartError(f"the multipart boundary is longer than {MAX_BOUNDARY} characters")
    try:
        return boundary.encode("ascii")
    except UnicodeEncodeError:
        raise MultipartError("the multipart boundary must be ASCII") from None


@dataclass
class Part:
    name: str
    filename: str | None
    content_type: str


class MultipartReader:
    """`await next_part()`, then its bytes with `chunks()`, until `next_part()` answers None."""

    def __init__(self, read: Reader, boundary: bytes) -> None:
        self._read = read
        # The body's first delimiter has no CRLF before it: one is put there, so that every
        # delimiter looks alike.
        self._buffer = b"\r\n"
        self._delimiter = b"\r\n--" + boundary
        self._eof = False
        self._in_part = False
        self._done = False
        self._started = False

    async def _fill(self) -> bool:
        """Read more into the buffer; False at the end of the body."""
        if self._eof:
            return False
        data = await self._read(READ_SIZE)
        if not data:
            self._eof = True
            return False
        self._buffer += data
        return True

    async def next_part(self) -> Part | None:
        """The next part's headers (the rest of the current part is skipped), or None at the end."""
        if self._done:
            return None
        if self._in_part:
            async for _ in self.chunks():
                pass
        # Up to and past the delimiter (the preamble, before the first one, is skipped).
        while True:
            at = self._buffer.find(self._delimiter)
            if at >= 0:
                self._buffer = self._buffer[at + len(self._delimiter) :]
                break
            keep = len(self._delimiter) - 1
            self._buffer = self._buffer[-keep:] if len(self._buffer) > keep else self._buffer
            if not await self._fill():
                raise MultipartError("the multipart body ends before its boundary")
        while len(self._buffer) < 2:
            if not await self._fill():
                raise MultipartError("the multipart body ends inside a boundary")
        if self._buffer.startswith(b"--"):
            self._done = True
            return None
        # Headers: up to an empty line, after the CRLF that ends the delimiter's line.
        while (end := self._buffer.find(b"\r\n\r\n")) < 0:
            if len(self._buffer) > MAX_HEADERS:
                raise MultipartError(f"a multipart part's headers are longer than {MAX_HEADERS} bytes")
            if not await self._fill():
                raise MultipartError("the multipart body ends inside a part's headers")
        head, self._buffer = self._buffer[:end], self._buffer[end + 4 :]
        self._in_part = True
        return _part(head)

    async def chunks(self) -> AsyncIterator[bytes]:
        """The current part's bytes, as they arrive (never more than about READ_SIZE at once)."""
        while self._in_part:
            at = self._buffer.find(self._delimiter)
            if at >= 0:
                data, self._buffer = self._buffer[:at], self._buffer[at:]
                self._in_part = False
                if data:
                    yield data
                return
            # All but what could be the start of a delimiter is the part's.
            safe = len(self._buffer) - (len(self._delimiter) - 1)
            if safe > 0:
                data, self._buffer = self._buffer[:safe], self._buffer[safe:]
                yield data
            if not await self._fill():
                raise MultipartError("the multipart body ends inside a part (no closing boundary)")

    async def read_all(self, limit: int) -> bytes:
        """The current part's bytes whole, for a small field; MultipartError past `limit`."""
        parts: list[bytes] = []
        size = 0
        async for data in self.chunks():
            size += len(data)
            if size > limit:
                raise MultipartError(f"a form field is longer than {limit} bytes")
            parts.append(data)
        return b"".join(parts)


def _part(head: bytes) -> Part:
    text = head.lstrip(b"\r\n").decode("utf-8", "replace")
    message = email.parser.HeaderParser(policy=email.policy.HTTP).parsestr(text + "\r\n\r\n")
    if message.get_content_disposition() != "form-data":
        raise MultipartError("every multipart part needs a Content-Disposition: form-data header")
    name = message.get_param("name", header="content-disposition")
    if not isinstance(name, str) or not name:
        raise MultipartError("a multipart part has no name")
    filename = message.get_param("filename", header="content-disposition")
    return Part(
        name=name,
        filename=filename if isinstance(filename, str) else None,
        content_type=message.get_content_type(),
    )
