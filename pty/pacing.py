"""Pacing one session's stream to its viewers: each says how far it is, and the leader reads the
agent's stream only as fast as they take it.

Alone, the leader looks at its own client, for free. With others watching, it asks them to
note in Redis how far they are, and reads on while the fastest viewer is within PACE_WINDOW
bytes and every viewer that keeps up is within SHARED_WINDOW: so viewers of similar speed all
get every byte, as the slowest of them sets the pace. A viewer that stays behind for
SLOW_GRACE no longer holds the others back; it skips ahead with a ``missed`` frame once the
agent's buffer moves past it. Whether anyone else watches is the viewer's presence
(pty/presence.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from channels.layers import BaseChannelLayer

from .leases import Leases, leases, progress_key

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

# Channel-layer event, handled by the consumer (terminal_progress).
PROGRESS_EVENT = "terminal.progress"


class Pacer:
    """``offset``: how far this viewer's client is; ``alone``: whether, while this viewer leads,
    nobody else watches (its presence's ``alone``); ``slow_grace``: see SLOW_GRACE."""

    def __init__(
        self,
        group: str,
        viewer: str,
        layer: BaseChannelLayer,
        offset: Callable[[], int],
        alone: Callable[[], bool],
        *,
        slow_grace: float = SLOW_GRACE,
    ) -> None:
        self.group = group
        self.viewer = viewer
        self._layer = layer
        self._offset = offset
        self._alone = alone
        self._slow_grace = slow_grace
        self._store: Leases = leases()
        self._moved = asyncio.Event()
        self._noting_until = 0.0
        self._note: asyncio.Task[None] | None = None
        # While leading with others: the last notes read, when, and since when each viewer has
        # been more than SHARED_WINDOW behind.
        self._asked = self._looked = float("-inf")
        self._noted: dict[str, int] = {}
        self._behind_since: dict[str, float] = {}

    # --- every viewer -----------------------------------------------------------------

    def moved(self) -> None:
        """This viewer's client has been sent more output."""
        self._moved.set()
        if time.monotonic() < self._noting_until:
            self._start_noting()

    def asked(self) -> None:
        """The leader, reading for several viewers, asks how far this one is."""
        self._noting_until = time.monotonic() + NOTE_FOR
        self._start_noting()

    async def leave(self) -> None:
        if self._note is not None:
            self._note.cancel()
            await asyncio.gather(self._note, return_exceptions=True)
        with contextlib.suppress(Exception):  # Redis away: the notes expire on their own
            await self._store.forget_progress(progress_key(self.group), self.viewer)

    async def ended(self) -> None:
        """The session's process exited (called by the leader): the notes go."""
        with contextlib.suppress(Exception):
            await self._store.drop(progress_key(self.group))

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

    async def pace(self, end: int) -> None:
        """Returns once the viewers can take more than ``end`` bytes (see the module's docstring)."""
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            if self._alone():
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
