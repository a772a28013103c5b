"""One viewer's part in its session's audience: being counted, saying how far it is, and, while
it leads, pacing the stream and knowing whether anyone else watches.

The leader reads the agent's stream only as fast as its viewers take it (``pace``). Alone, it
looks at its own client, for free. With others watching, it asks them to note in Redis how far
they are, and reads on while the fastest viewer is within PACE_WINDOW bytes and every viewer
that keeps up is within SHARED_WINDOW: so viewers of similar speed all get every byte, as the
slowest of them sets the pace. A viewer that stays behind for SLOW_GRACE no longer holds the
others back; it skips ahead with a ``missed`` frame once the agent's buffer moves past it.
And the leader publishes output to the channel layer only while someone else watches
(``shared``): alone, it skips the round trip through Redis altogether. A viewer that joins
says so at once; output the leader read before it heard went to its own client only, so on
hearing it publishes where the output ends, and the newcomer refills the rest from the agent
(without that, a session gone quiet would never show it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable

from channels.layers import BaseChannelLayer

from .leases import Leases, audience_key, leases, progress_key
from .stream import MARK_EVENT

log = logging.getLogger(__name__)

# The leader reads on while some viewer is within this many bytes of what was read...
PACE_WINDOW = 256 * 1024
# ... and, with several viewers, while every one that keeps up is within this many. The agent's
# replay buffer (1 MiB by default) holds what is read plus what the agent has queued for the
# stream beyond it (up to 256 KiB and gRPC's window), so a viewer this far behind can still be
# refilled from it.
SHARED_WINDOW = 512 * 1024
# A viewer more than SHARED_WINDOW behind for this long stops holding the others back.
SLOW_GRACE = 1.0
# How often a viewer notes its progress when asked, and the leader looks at the notes: the
# notes lag by about this much, and the leader may read SHARED_WINDOW bytes ahead of them, so
# this bounds fan-out to about SHARED_WINDOW / (2 × PROGRESS_INTERVAL) = 25 MiB/s at worst.
# Shorter brings each of several viewers closer to a lone viewer's speed, at the cost of
# 1 / PROGRESS_INTERVAL small Redis writes a second per viewer while output flows (the
# measured trade is in docs/performance.md).
PROGRESS_INTERVAL = 0.01
# For how long a viewer notes after being asked; the leader asks again after half of it.
NOTE_FOR = 1.0

# Channel-layer events, handled by the consumer (terminal_progress, terminal_joined).
PROGRESS_EVENT = "terminal.progress"
JOINED_EVENT = "terminal.joined"


class Audience:
    """``count_every``: seconds between the leader's counts of the viewers (the consumer passes
    settings.PTY_VIEWER_COUNT_SECONDS); ``slow_grace``: see SLOW_GRACE."""

    def __init__(
        self,
        group: str,
        viewer: str,
        layer: BaseChannelLayer,
        offset: Callable[[], int],
        heard: Callable[[], int],
        *,
        count_every: float,
        slow_grace: float = SLOW_GRACE,
    ) -> None:
        self.group = group
        self.viewer = viewer
        self._layer = layer
        self._offset = offset  # how far this viewer's client is
        self._heard = heard  # how far the output has reached this viewer (sent or not)
        self._count_every = count_every
        self._slow_grace = slow_grace
        self._store: Leases = leases()
        self._moved = asyncio.Event()
        self._noting_until = 0.0
        self._note: asyncio.Task[None] | None = None
        # While leading: False only once a count found nobody else (publishing is the default).
        self._leading = False
        self._alone = False
        self._joins = 0
        self._marking: set[asyncio.Task[None]] = set()
        # While leading with others: the last notes read, when, and since when each viewer has
        # been more than SHARED_WINDOW behind.
        self._asked = self._looked = float("-inf")
        self._noted: dict[str, int] = {}
        self._behind_since: dict[str, float] = {}

    # --- every viewer -----------------------------------------------------------------

    async def enter(self) -> None:
        await self._store.join(audience_key(self.group), self.viewer)
        await self._layer.group_send(self.group, {"type": JOINED_EVENT})

    async def leave(self) -> None:
        if self._note is not None:
            self._note.cancel()
        with contextlib.suppress(Exception):  # Redis away: the entries expire on their own
            await self._store.leave(audience_key(self.group), self.viewer)
            await self._store.forget_progress(progress_key(self.group), self.viewer)

    async def ended(self) -> None:
        """The session's process exited (called by the leader): its bookkeeping goes."""
        with contextlib.suppress(Exception):
            await self._store.drop(audience_key(self.group), progress_key(self.group))

    def moved(self) -> None:
        """This viewer's client has been sent more output."""
        self._moved.set()
        if time.monotonic() < self._noting_until:
            self._start_noting()

    def asked(self) -> None:
        """The leader, reading for several viewers, asks how far this one is."""
        self._noting_until = time.monotonic() + NOTE_FOR
        self._start_noting()

    def someone_joined(self) -> None:
        self._joins += 1
        self._set_alone(False)

    def _start_noting(self) -> None:
        if self._note is None or self._note.done():
            self._note = asyncio.ensure_future(self._note_progress())

    async def _note_progress(self) -> None:
        """Notes how far this client is: now, then at most every PROGRESS_INTERVAL while it
        moves on and the leader still asks."""
        key, noted = progress_key(self.group), -1
        try:
            while noted != self._offset() and time.monotonic() < self._noting_until:
                noted = self._offset()
                await self._store.note_progress(key, self.viewer, noted)
                await asyncio.sleep(PROGRESS_INTERVAL)
        except Exception:  # Redis away: the leader then paces to its own client only
            log.warning("noting the progress of %s failed", self.group, exc_info=True)

    # --- the leader -----------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def leading(self) -> AsyncIterator[None]:
        """While leading: counts the audience now and then, to know whether to publish."""
        self._leading, self._alone = True, False
        counting = asyncio.ensure_future(self._count())
        try:
            yield
        finally:
            self._leading, self._alone = False, False
            tasks = [counting, *self._marking]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def shared(self) -> bool:
        """Whether output must go through the channel layer: someone else may be watching."""
        return not self._alone

    async def _count(self) -> None:
        key = audience_key(self.group)
        while True:
            joins = self._joins
            try:
                alone = await self._store.audience(key) <= 1
            except Exception:
                log.warning("counting the viewers of %s failed", self.group, exc_info=True)
                alone = False
            if joins == self._joins:  # nobody said they joined while this counted
                self._set_alone(alone)
            await asyncio.sleep(self._count_every)

    def _set_alone(self, alone: bool) -> None:
        if self._leading and self._alone and not alone:
            # What was read while alone reached this viewer's client only: say where the
            # output ends, so whoever else now watches refills it from the agent.
            task = asyncio.ensure_future(self._mark(self._heard()))
            self._marking.add(task)
            task.add_done_callback(self._marking.discard)
        self._alone = alone

    async def _mark(self, offset: int) -> None:
        try:
            await self._layer.group_send(self.group, {"type": MARK_EVENT, "offset": offset})
        except Exception:  # the next output's offset shows the gap all the same
            log.warning("publishing where the output of %s ends failed", self.group, exc_info=True)

    async def pace(self, end: int) -> None:
        """Returns once the viewers can take more than ``end`` bytes (see the module's docstring)."""
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            if self._alone:
                if end - self._offset() <= PACE_WINDOW:
                    return
            else:
                await self._refresh(now)
                if self._may_read_past(end, now):
                    return
            self._moved.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._moved.wait(), PROGRESS_INTERVAL)

    async def _refresh(self, now: float) -> None:
        """Asks the others to note their progress, and reads the notes, each when due."""
        try:
            if now - self._asked >= NOTE_FOR / 2:
                self._asked = now
                await self._layer.group_send(self.group, {"type": PROGRESS_EVENT})
            if now - self._looked >= PROGRESS_INTERVAL:
                self._looked = now
                self._noted = await self._store.progress(progress_key(self.group))
        except Exception:  # Redis away: the last notes stand, and this viewer's own client
            log.warning("reading the progress of %s failed", self.group, exc_info=True)

    def _may_read_past(self, end: int, now: float) -> bool:
        offsets = {**self._noted, self.viewer: self._offset()}
        for gone in self._behind_since.keys() - offsets.keys():
            del self._behind_since[gone]
        holding_back = False
        for viewer, offset in offsets.items():
            if end - offset <= SHARED_WINDOW:
                self._behind_since.pop(viewer, None)
            elif now - self._behind_since.setdefault(viewer, now) < self._slow_grace:
                holding_back = True
        return not holding_back and end - max(offsets.values()) <= PACE_WINDOW
