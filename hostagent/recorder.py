"""A PTY session's recording as asciicast v2 lines, made from the PTY's own bytes, bounded twice.

The session hands the recorder what happens (output as read from the master, input as written,
resizes, markers, the exit); the recorder turns each into one complete JSON line and holds the
lines until the pusher (hostagent/recordings.py) takes them as chunks. Every line is
`json.dumps` of a list with `ensure_ascii`: whatever a capsule writes (newlines, quotes, escape
sequences, text that looks like JSON, U+2028, bytes that are not UTF-8) ends up escaped inside
one string, so the cast is plain ASCII, one event a line, and no output can end a line early.

Output is decoded incrementally, so a character split across two reads is never broken; bytes
that are not UTF-8 become U+FFFD (asciicast events are text). Bounds: the lines not yet pushed
are held up to `backlog` bytes (beyond that new lines are dropped and counted, and a marker
says how much was lost once there is room again), and the whole recording stops at `max_bytes`
with a final marker. Nothing here blocks or slows the terminal: every call is a short
synchronous append.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

# Chunks are due this often, or sooner once this many bytes are pending.
CHUNK_INTERVAL = 1.0
CHUNK_SIZE = 64 * 1024
# Lines held for the control plane (pending and in flight) before new ones are dropped.
BACKLOG_LIMIT = 8 * 1024 * 1024
# Input is recorded in pieces of at most this many bytes (a paste is one write), so a line stays
# well under the control plane's chunk limit.
EVENT_BYTES = 64 * 1024
# Kept out of the size cap's budget for the marker that says the cap was reached.
CAP_RESERVE = 256
MAX_LABEL = 256


@dataclass(frozen=True)
class RecordingOptions:
    input: bool = False
    # 0: no cap.
    max_bytes: int = 0
    title: str = ""


@dataclass(frozen=True)
class Chunk:
    """Whole lines, `seq` in order from 0; `offset` (output bytes) and `time` where it starts."""

    seq: int
    offset: int
    time: float
    data: bytes
    final: bool = False
    exit_code: int | None = None


@dataclass
class _Line:
    data: bytes
    offset: int
    time: float


def _line(event: list[object]) -> bytes:
    return json.dumps(event, ensure_ascii=True).encode("ascii") + b"\n"


class Recorder:
    def __init__(
        self,
        options: RecordingOptions,
        width: int,
        height: int,
        command: str,
        *,
        clock: Callable[[], float] = time.monotonic,
        backlog: int = BACKLOG_LIMIT,
        chunk_size: int = CHUNK_SIZE,
    ) -> None:
        self.options = options
        self._clock = clock
        self._start = clock()
        self._backlog = backlog
        self._chunk_size = chunk_size
        self._output = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._input = codecs.getincrementaldecoder("utf-8")(errors="replace")
        # Output bytes given to the decoder, and the last event's time (times never go back).
        self._fed = 0
        self._last_time = 0.0
        self._pending: deque[_Line] = deque()
        self._pending_bytes = 0
        self._in_flight = 0
        self._seq = 0
        # Bytes of every line made, kept or dropped: the size cap counts them all.
        self.size = 0
        self.truncated = False
        self.lost_events = 0
        self.lost_bytes = 0
        self.finished = False
        self.exit_code: int | None = None
        self._final_taken = False
        self._abandoned = False
        self._due = asyncio.Event()
        self._first_pending_at = 0.0
        header = {
            "version": 2,
            "width": width,
            "height": height,
            "timestamp": int(time.time()),
            "command": command,
            "title": options.title,
        }
        self._add(_line_of_header(header), force=True)

    # What happens in the session

    def output(self, data: bytes) -> None:
        if self._closed():
            self._fed += len(data)
            return
        offset = self._decoded_offset()
        self._fed += len(data)
        text = self._output.decode(data)
        if text:
            self._event("o", text, offset)

    def input(self, data: bytes) -> None:
        if not self.options.input or self._closed():
            return
        for start in range(0, len(data), EVENT_BYTES):
            text = self._input.decode(data[start : start + EVENT_BYTES])
            if text:
                self._event("i", text, self._decoded_offset())

    def resize(self, cols: int, rows: int) -> None:
        if not self._closed():
            self._event("r", f"{cols}x{rows}", self._decoded_offset())

    def mark(self, label: str) -> bool:
        """Adds a marker; False when the recording no longer takes events."""
        if self._closed():
            return False
        self._event("m", label[:MAX_LABEL], self._decoded_offset())
        return True

    def finish(self, exit_code: int) -> None:
        if self.finished:
            return
        if not self._closed():
            offset = self._decoded_offset()
            rest = self._output.decode(b"", final=True)
            if rest:
                self._event("o", rest, offset)
            if self.lost_events:
                # Nothing follows to carry it: the end says what was lost.
                self._add(self._lost_line(self._now()), offset=offset, at=self._last_time, force=True)
                self.lost_events = self.lost_bytes = 0
        self.finished = True
        self.exit_code = exit_code
        self._due.set()

    def abandon(self) -> None:
        """The control plane refused the recording: drop what is held and take nothing more."""
        self._abandoned = True
        self._pending.clear()
        self._pending_bytes = 0
        self._due.set()

    # What the pusher takes

    @property
    def held(self) -> int:
        """Bytes in memory: lines pending and the chunk in flight."""
        return self._pending_bytes + self._in_flight

    @property
    def pending(self) -> int:
        """Bytes of lines not yet taken into a chunk."""
        return self._pending_bytes

    async def next_chunk(self, interval: float = CHUNK_INTERVAL) -> Chunk | None:
        """The next chunk once it is due (CHUNK_SIZE pending, `interval` after its first line,
        or the session's end); None once the final one was taken (or the recording abandoned)."""
        loop = asyncio.get_running_loop()
        while True:
            if self._abandoned or self._final_taken:
                return None
            if self.finished or self._pending_bytes >= self._chunk_size:
                return self._take()
            timeout = None
            if self._pending:
                timeout = self._first_pending_at + interval - loop.time()
                if timeout <= 0:
                    return self._take()
            self._due.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._due.wait(), timeout)

    def sent(self, chunk: Chunk) -> None:
        """The control plane has the chunk: its memory is free again."""
        self._in_flight -= len(chunk.data)

    def _take(self) -> Chunk:
        lines: list[bytes] = []
        size = 0
        first = self._pending[0] if self._pending else None
        while self._pending and (not lines or size + len(self._pending[0].data) <= self._chunk_size):
            line = self._pending.popleft()
            lines.append(line.data)
            size += len(line.data)
        self._pending_bytes -= size
        self._in_flight += size
        if self._pending:
            self._first_pending_at = asyncio.get_running_loop().time()
        final = self.finished and not self._pending
        self._final_taken = final
        chunk = Chunk(
            seq=self._seq,
            offset=first.offset if first else self._decoded_offset(),
            time=first.time if first else self._now(),
            data=b"".join(lines),
            final=final,
            exit_code=self.exit_code if final else None,
        )
        self._seq += 1
        return chunk

    # Lines

    def _closed(self) -> bool:
        return self.finished or self.truncated or self._abandoned

    def _decoded_offset(self) -> int:
        buffered, _flag = self._output.getstate()
        return self._fed - len(buffered)

    def _now(self) -> float:
        now = round(max(self._clock() - self._start, self._last_time), 6)
        self._last_time = now
        return now

    def _event(self, kind: str, text: str, offset: int) -> None:
        now = self._now()
        line = _line([now, kind, text])
        if self.lost_events:
            lost = self._lost_line(now)
            budget = self._budget()
            room = self.held + len(lost) + len(line) <= self._backlog
            if room and (budget is None or len(lost) <= budget):
                self.lost_events = self.lost_bytes = 0
                self._add(lost, offset=offset, at=now)
        budget = self._budget()
        if budget is not None and len(line) > budget:
            # The part of the event that fits, then the marker: the cap is reached.
            if kind == "o":
                # At most 12 bytes a character (a surrogate pair, escaped).
                cut = text[: max(0, (budget - 40) // 12)]
                if cut:
                    self._add(_line([now, kind, cut]), offset=offset, at=now)
            self.truncated = True
            cap = self.options.max_bytes
            marker = f"recording stopped: it reached its size cap of {cap} bytes"
            self._add(_line([now, "m", marker]), offset=offset, at=now, force=True)
            return
        self._add(line, offset=offset, at=now)

    def _lost_line(self, now: float) -> bytes:
        return _line(
            [
                now,
                "m",
                f"recording lost {self.lost_events} events ({self.lost_bytes} bytes): "
                "the control plane could not be reached",
            ]
        )

    def _budget(self) -> int | None:
        if not self.options.max_bytes:
            return None
        return self.options.max_bytes - CAP_RESERVE - self.size

    def _add(self, line: bytes, *, offset: int = 0, at: float = 0.0, force: bool = False) -> bool:
        """Holds a line for the pusher; drops it (counted) when the backlog is full, except a
        forced one (the header, the cap's marker: small, and what says what happened)."""
        self.size += len(line)
        if not force and self.held + len(line) > self._backlog:
            self.lost_events += 1
            self.lost_bytes += len(line)
            return False
        if not self._pending:
            self._first_pending_at = asyncio.get_running_loop().time()
            self._due.set()
        self._pending.append(_Line(line, offset, at))
        self._pending_bytes += len(line)
        if self._pending_bytes >= self._chunk_size:
            self._due.set()
        return True


def _line_of_header(header: dict[str, object]) -> bytes:
    return json.dumps(header, ensure_ascii=True).encode("ascii") + b"\n"
