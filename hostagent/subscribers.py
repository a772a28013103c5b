"""What an attached stream receives: output, a note of missed bytes, the exit; and its queue."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from hostagent.replay import ReplayBuffer

# Output queued for one stream before the terminal stops being read. Kept well below the
# replay buffer (1 MiB by default), so that a control plane that paces the stream and refills
# its viewers from the buffer finds there every byte it has not taken yet.
SUBSCRIBER_QUEUE_BYTES = 256 * 1024
# Replayed output is sent in pieces of the size live output is read in.
BACKLOG_CHUNK = 64 * 1024
# While output streams (more than STREAMING_BYTES pushed within STREAMING_WINDOW seconds), a
# stream waits COALESCE_DELAY before taking less than BACKLOG_CHUNK, so that more can join it.
# A program printing line by line (each line one write to the terminal) otherwise makes a
# message per few hundred bytes, and each message pays its way through gRPC, daphne and the
# WebSocket. Typing never streams (an echo is a few bytes), so it goes at once.
STREAMING_BYTES = 32 * 1024
STREAMING_WINDOW = 0.01
COALESCE_DELAY = 0.001


@dataclass(frozen=True)
class Output:
    data: bytes
    offset: int


@dataclass(frozen=True)
class Missed:
    """`bytes` bytes before `offset` are gone from the replay buffer; output goes on at `offset`."""

    offset: int
    bytes: int


@dataclass(frozen=True)
class Exited:
    exit_code: int


Event = Output | Missed | Exited


class Subscriber:
    """One attached stream's queue of events.

    Live output stops being read while the queue holds `limit` bytes of output; `on_take` runs
    after each event taken, so the session can read again. A backlog pushed at attach time may
    exceed the limit: the session then waits until the stream has caught up. ``streaming_window``
    and ``coalesce_delay``: see STREAMING_WINDOW and COALESCE_DELAY.
    """

    def __init__(
        self,
        on_take: Callable[[], None],
        limit: int = SUBSCRIBER_QUEUE_BYTES,
        *,
        streaming_window: float = STREAMING_WINDOW,
        coalesce_delay: float = COALESCE_DELAY,
    ) -> None:
        self._on_take = on_take
        self._limit = limit
        self._streaming_window = streaming_window
        self._coalesce_delay = coalesce_delay
        self._bytes = 0
        self._items: deque[Event] = deque()
        self._ready = asyncio.Event()
        # Bytes pushed in the current and the previous streaming window, and when the current began.
        self._window_start = 0.0
        self._window_bytes = 0
        self._previous_bytes = 0

    def full(self) -> bool:
        return self._bytes >= self._limit

    def push(self, event: Event) -> None:
        self._items.append(event)
        if isinstance(event, Output):
            self._bytes += len(event.data)
            self._count_pushed(len(event.data))
        self._ready.set()

    def _count_pushed(self, size: int) -> None:
        now = time.monotonic()
        if now - self._window_start >= self._streaming_window:
            recent = now - self._window_start < 2 * self._streaming_window
            self._previous_bytes = self._window_bytes if recent else 0
            self._window_start, self._window_bytes = now, 0
        self._window_bytes += size

    def streaming(self) -> bool:
        if time.monotonic() - self._window_start >= 2 * self._streaming_window:
            return False
        return self._window_bytes + self._previous_bytes >= STREAMING_BYTES

    async def get(self) -> Event:
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        if isinstance(self._items[0], Output) and self._bytes < BACKLOG_CHUNK and self.streaming():
            await asyncio.sleep(self._coalesce_delay)
        event = self._items.popleft()
        if isinstance(event, Output):
            event = self._merge(event)
            self._bytes -= len(event.data)
        self._on_take()
        return event

    def _merge(self, first: Output) -> Output:
        """``first`` joined with the output queued right after it, up to BACKLOG_CHUNK bytes:
        a stream that fell behind catches up in fewer, larger messages."""
        parts = [first.data]
        size = len(first.data)
        while self._items and isinstance(self._items[0], Output):
            following = self._items[0]
            if size + len(following.data) > BACKLOG_CHUNK:
                break
            parts.append(following.data)
            size += len(following.data)
            self._items.popleft()
        return first if len(parts) == 1 else Output(b"".join(parts), first.offset)


def backlog(buffer: ReplayBuffer, resume_from: int | None) -> list[Event]:
    """The buffered events a new subscriber gets first: from `resume_from`, or none."""
    if resume_from is None:
        return []
    buffer.check(resume_from)
    offset, data = buffer.read(resume_from)
    events: list[Event] = []
    if offset > resume_from:
        events.append(Missed(offset=offset, bytes=offset - resume_from))
    events.extend(
        Output(data[at : at + BACKLOG_CHUNK], offset + at) for at in range(0, len(data), BACKLOG_CHUNK)
    )
    return events
