"""A session's replay buffer: its most recent output, addressed by absolute offset.

Offsets count every byte the session ever wrote; the buffer holds those from `start` to `end`
(at most `limit` bytes). Appending and trimming cost O(chunk): small reads are gathered into
a tail of up to SEAL bytes, so even a byte-at-a-time terminal keeps few chunk objects.
"""

from __future__ import annotations

from collections import deque

from hostagent.errors import InvalidArgument
from hostagent.queries import QUERY_MAX, neutralise_queries

DEFAULT_LIMIT = 1024 * 1024
SEAL = 64 * 1024


class ReplayBuffer:
    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        self.limit = limit
        self.start = 0
        self.end = 0
        self._sealed: deque[bytes] = deque()
        self._tail = bytearray()

    def append(self, data: bytes) -> None:
        self.end += len(data)
        if not self._tail and len(data) >= SEAL:
            self._sealed.append(data)
        else:
            self._tail += data
            if len(self._tail) >= SEAL:
                self._sealed.append(bytes(self._tail))
                self._tail.clear()
        self._trim()

    def _trim(self) -> None:
        excess = self.end - self.start - self.limit
        while excess > 0 and self._sealed:
            first = self._sealed[0]
            if len(first) <= excess:
                self._sealed.popleft()
                cut = len(first)
            else:
                self._sealed[0] = first[excess:]
                cut = excess
            self.start += cut
            excess -= cut
        if excess > 0:
            del self._tail[:excess]
            self.start += excess

    def check(self, offset: int) -> None:
        if offset > self.end:
            raise InvalidArgument(f"offset {offset} is beyond the end of the output ({self.end} bytes)")

    def read(self, offset: int, max_bytes: int | None = None) -> tuple[int, bytes]:
        """Up to `max_bytes` from `offset`, or from `start` if those are gone; returns (offset, data)."""
        self.check(offset)
        offset = max(offset, self.start)
        stop = self.end if max_bytes is None else min(self.end, offset + max_bytes)
        parts: list[bytes] = []
        position = self.start
        for chunk in (*self._sealed, self._tail):
            chunk_end = position + len(chunk)
            if chunk_end > offset and position < stop:
                parts.append(bytes(chunk[max(offset, position) - position : min(stop, chunk_end) - position]))
            position = chunk_end
            if position >= stop:
                break
        return offset, b"".join(parts)

    def read_neutralised(self, offset: int, max_bytes: int | None = None) -> tuple[int, bytes]:
        """Like `read`, with terminal queries replaced by NULs.

        The queries are searched with QUERY_MAX bytes of context on each side, so a query that
        straddles the edge of one read is neutralised in both reads.
        """
        offset, data = self.read(offset, max_bytes)
        before = max(self.start, offset - QUERY_MAX)
        _, window = self.read(before, offset - before + len(data) + QUERY_MAX)
        cleaned = neutralise_queries(window)
        return offset, cleaned[offset - before : offset - before + len(data)]
