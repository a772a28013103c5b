"""One connection's input, resizes and kills, sent to the host agent in the order received.

Nothing is dropped: consecutive input frames are merged into one RPC, while a
resize or kill keeps its place in the line. When the host agent falls behind,
``wait_for_room`` holds the socket reader back instead of discarding frames.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

# Bytes of input accepted but not yet sent before the reader waits.
HIGH_WATER = 1024 * 1024
# Largest single PtySendInput; keeps each RPC well under gRPC's message limit.
MAX_BATCH = 256 * 1024


@dataclass(frozen=True)
class Op:
    kind: str  # "input", "resize" or "kill"
    data: bytes = b""
    cols: int = 0
    rows: int = 0


Sender = Callable[[Op], Awaitable[None]]


class InputPump:
    def __init__(self, send: Sender) -> None:
        self._send = send
        self._queue: deque[Op] = deque()
        self._pending_bytes = 0
        self._wakeup = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._idle = asyncio.Event()
        self._idle.set()

    def submit(self, op: Op) -> None:
        self._queue.append(op)
        self._pending_bytes += len(op.data)
        if self._pending_bytes >= HIGH_WATER:
            self._room.clear()
        self._idle.clear()
        self._wakeup.set()

    async def wait_for_room(self) -> None:
        await self._room.wait()

    async def drained(self) -> None:
        await self._idle.wait()

    def _next(self) -> Op:
        op = self._queue.popleft()
        if op.kind != "input":
            return op
        # Merge the run of input frames at the head of the line, and only that run.
        chunks = [op.data]
        size = len(op.data)
        while self._queue and self._queue[0].kind == "input" and size < MAX_BATCH:
            more = self._queue.popleft()
            chunks.append(more.data)
            size += len(more.data)
        return Op("input", data=b"".join(chunks))

    async def run(self) -> None:
        while True:
            if not self._queue:
                self._idle.set()
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            op = self._next()
            try:
                await self._send(op)
            finally:
                self._pending_bytes -= len(op.data)
                if self._pending_bytes < HIGH_WATER:
                    self._room.set()
