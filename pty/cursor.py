"""One client's cursor in its session's output: in order, exactly once, at the client's pace.

Output reaches a viewer as group events (from the leader, on any worker) and, on the leader's
own worker, straight from the stream worker. Either way it carries its offset, so a duplicate
is dropped and a gap is noticed. While the client keeps up (its send window is open) output
goes straight out. While it is behind, up to PENDING_LIMIT bytes wait here in order; beyond
that, output is dropped and later refilled from the host agent's replay buffer, so a slow
client costs its worker a bounded amount of memory. Bytes the buffer no longer holds are
reported as lost (a ``missed`` frame, or an error for a reference client). Until the client's
dialect is known (pty/dialects.py) the cursor is held shut, as for a client that is behind.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc

from capsules.agents import describe
from wrenn.flow import SendWindow

from . import protocol as p
from .catchup import Chunk, Ended, Missed

log = logging.getLogger(__name__)

# Output held for a client that is behind, before it is dropped (and refilled from the agent).
PENDING_LIMIT = 128 * 1024
# Output refilled from the agent goes out in frames of at most this size, each one only once
# the client has taken the previous ones.
REFILL_FRAME = 16 * 1024

SendFrame = Callable[..., Awaitable[None]]
# send_output(offset, data): one output frame, in the client's encoding (JSON or binary).
SendOutput = Callable[[int, bytes], Awaitable[None]]
# send_lost(lost, offset): the client is told that ``lost`` bytes before ``offset`` are gone.
SendLost = Callable[[int, int], Awaitable[None]]
# read_agent(offset, until, neutralize_queries): pty.catchup.read_output for this session.
ReadAgent = Callable[[int, int | None, bool], AsyncIterator[Chunk | Missed | Ended]]


class OutputCursor:
    def __init__(
        self,
        label: str,
        send_frame: SendFrame,
        send_output: SendOutput,
        send_lost: SendLost,
        read_agent: ReadAgent,
        window: SendWindow | None,
        on_progress: Callable[[int], None],
        on_exit: Callable[[int], Awaitable[None]],
    ) -> None:
        self.label = label
        self.next_offset = 0  # the next byte of output this client is to get
        self.seen_end = 0  # the end of the output, as far as events have told
        self._send_frame = send_frame
        self._send_output_frame = send_output
        self._send_lost = send_lost
        self._read_agent = read_agent
        self._window = window
        self._on_progress = on_progress
        self._on_exit = on_exit
        self._exit_code: int | None = None  # once the exit event arrived
        # Output waiting for the client, contiguous from next_offset: (offset, data).
        self._pending: deque[tuple[int, bytes]] = deque()
        self._pending_end = 0
        self._pending_bytes = 0
        self._drain: asyncio.Task[None] | None = None
        # Output may be sent from the group events and from the leader's own stream at once.
        self._sending = asyncio.Lock()
        # Shut while the client's dialect is unknown: nothing can be encoded for it yet.
        self._open = asyncio.Event()
        self._open.set()

    # --- events -----------------------------------------------------------------------------

    async def output(self, offset: int, data: bytes) -> None:
        """``data``, the output from ``offset`` on."""
        end = offset + len(data)
        self.seen_end = max(self.seen_end, end)
        if self._draining():
            self._hold(offset, data)
            return
        if end <= self.next_offset:
            return  # already sent (streams overlapped as the lead changed hands, or a refill read it)
        if offset > self.next_offset:
            log.info("pty %s: refilling bytes %d-%d lost on the way", self.label, self.next_offset, offset)
            self._start_drain()
            return
        offset, data = self._trim(offset, data)
        if not self._writable():
            self._hold(offset, data)
            self._start_drain()
            return
        await self._send_output(offset, data)

    def mark(self, offset: int) -> None:
        """The output ends at ``offset`` (sent by the leader once it goes quiet)."""
        self.seen_end = max(self.seen_end, offset)
        if self.seen_end > self.next_offset and not self._draining():
            log.info("pty %s: refilling bytes %d-%d lost on the way", self.label, self.next_offset, offset)
            self._start_drain()

    async def exit(self, offset: int, exit_code: int) -> None:
        """The process exited after writing ``offset`` bytes: the exit goes out after the last of them."""
        self.seen_end = max(self.seen_end, offset)
        self._exit_code = exit_code
        if self._draining() or self.seen_end > self.next_offset:
            self._start_drain()
        else:
            await self._on_exit(exit_code)

    async def catch_up(self, until: int | None, *, neutralize_queries: bool = False) -> Ended | None:
        """Sends output from ``next_offset`` up to ``until`` (or what exists now) from the agent."""
        async for item in self._read_agent(self.next_offset, until, neutralize_queries):
            if isinstance(item, Missed):
                await self._wait_writable()
                await self._send_lost(item.bytes, item.offset)
                self._progressed(item.offset)
            elif isinstance(item, Chunk):
                for at in range(0, len(item.data), REFILL_FRAME):
                    await self._wait_writable()
                    await self._send_output(item.offset + at, item.data[at : at + REFILL_FRAME])
            elif isinstance(item, Ended):
                return item
        return None

    def stop(self) -> None:
        # The drain may be what is stopping (it sent the exit and closed): it ends on its own.
        if self._drain is not None and self._drain is not asyncio.current_task():
            self._drain.cancel()

    # --- sending at the client's pace ------------------------------------------------------

    def shut(self) -> None:
        """Holds output back (by offset, as for a client that is behind) until ``open``."""
        self._open.clear()

    def open(self) -> None:
        self._open.set()
        if self._pending or self.next_offset < self.seen_end:
            self._start_drain()

    def _writable(self) -> bool:
        return self._open.is_set() and (self._window is None or self._window.writable)

    async def _wait_writable(self) -> None:
        await self._open.wait()
        if self._window is not None:
            await self._window.wait()

    def _draining(self) -> bool:
        return self._drain is not None and not self._drain.done()

    def _start_drain(self) -> None:
        if not self._draining():
            self._drain = asyncio.ensure_future(self._drain_all())

    def _hold(self, offset: int, data: bytes) -> None:
        """Keeps output for later if it continues what is held and there is room; else drops it."""
        expected = self._pending_end if self._pending else self.next_offset
        if offset <= expected < offset + len(data) and self._pending_bytes + len(data) <= PENDING_LIMIT:
            if offset < expected:
                offset, data = self._trim(offset, data, expected)
            self._pending.append((offset, data))
            self._pending_end = offset + len(data)
            self._pending_bytes += len(data)

    async def _drain_all(self) -> None:
        """Sends what is held, then refills from the agent up to ``seen_end``, then the exit.

        Output arriving meanwhile is held or dropped, never sent past this; once this has
        caught up it returns without awaiting anything, so the next event goes out live.
        """
        while self._pending or self.next_offset < self.seen_end:
            await self._wait_writable()
            if self._pending:
                offset, data = self._pending.popleft()
                self._pending_bytes -= len(data)
                if offset + len(data) > self.next_offset:
                    offset, data = self._trim(offset, data)
                    await self._send_output(offset, data)
                continue
            until = self.seen_end
            try:
                await self.catch_up(until)
            except grpc.aio.AioRpcError as exc:
                lost = until - self.next_offset
                await self._send_frame(
                    p.ERROR, data=f"could not recover {lost} bytes of output: {describe(exc)}", fatal=False
                )
            if self.next_offset < until:  # the agent could not give them all: say how many are gone
                await self._send_lost(until - self.next_offset, until)
                self._progressed(until)
        if self._exit_code is not None:
            await self._on_exit(self._exit_code)

    def _trim(self, offset: int, data: bytes, start: int | None = None) -> tuple[int, bytes]:
        """The part of the output from ``start`` (next_offset by default) on."""
        start = self.next_offset if start is None else start
        if offset >= start:
            return offset, data
        return start, data[start - offset :]

    async def _send_output(self, offset: int, data: bytes) -> None:
        async with self._sending:
            if offset + len(data) <= self.next_offset:
                return  # another sender went first while this one waited
            offset, data = self._trim(offset, data)
            self._progressed(offset + len(data))
            await self._send_output_frame(offset, data)

    def _progressed(self, offset: int) -> None:
        self.next_offset = offset
        self._on_progress(offset)
