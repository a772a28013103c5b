"""One viewer's presence in its session's audience: counted while it watches, and, while it
leads, knowing whether anyone else watches.

The leader publishes output to the channel layer only while someone else watches
(``shared``): alone, it skips the round trip through Redis altogether. A viewer that joins
says so at once; output the leader read before it heard went to its own client only, so on
hearing it publishes where the output ends, and the newcomer refills the rest from the agent
(without that, a session gone quiet would never show it). Pacing the stream to the viewers is
the other job, in pty/pacing.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from channels.layers import BaseChannelLayer

from .leases import Leases, audience_key, leases
from .stream import MARK_EVENT

log = logging.getLogger(__name__)

# Channel-layer event, handled by the consumer (terminal_joined).
JOINED_EVENT = "terminal.joined"


class Presence:
    """``heard``: how far the output has reached this viewer (sent or not); ``count_every``:
    seconds between the leader's counts of the viewers (settings.PTY_VIEWER_COUNT_SECONDS)."""

    def __init__(
        self,
        group: str,
        viewer: str,
        layer: BaseChannelLayer,
        heard: Callable[[], int],
        *,
        count_every: float,
    ) -> None:
        self.group = group
        self.viewer = viewer
        self._layer = layer
        self._heard = heard
        self._count_every = count_every
        self._store: Leases = leases()
        # While leading: True only once a count found nobody else (publishing is the default).
        self._leading = False
        self._alone = False
        self._joins = 0
        self._marking: set[asyncio.Task[None]] = set()

    async def enter(self) -> None:
        await self._store.join(audience_key(self.group), self.viewer)
        await self._layer.group_send(self.group, {"type": JOINED_EVENT})

    async def leave(self) -> None:
        with contextlib.suppress(Exception):  # Redis away: the entry expires on its own
            await self._store.leave(audience_key(self.group), self.viewer)

    async def ended(self) -> None:
        """The session's process exited (called by the leader): its audience goes."""
        with contextlib.suppress(Exception):
            await self._store.drop(audience_key(self.group))

    def someone_joined(self) -> None:
        self._joins += 1
        self._set_alone(False)

    @property
    def alone(self) -> bool:
        """While leading: whether the last count found nobody else watching."""
        return self._alone

    def shared(self) -> bool:
        """Whether output must go through the channel layer: someone else may be watching."""
        return not self._alone

    @contextlib.asynccontextmanager
    async def leading(self) -> AsyncIterator[None]:
        """While leading: counts the audience now and then, to know whether to publish.

        The count also stops by a flag of its own, not only by being cancelled: a cancellation
        that arrives inside a Redis call can be swallowed by the client (seen: the count went on
        sleeping and counting, and the connection it served could never finish closing).
        """
        self._leading, self._alone = True, False
        stop = asyncio.Event()
        counting = asyncio.ensure_future(self._count(stop))
        try:
            yield
        finally:
            self._leading, self._alone = False, False
            stop.set()
            tasks = [counting, *self._marking]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _count(self, stop: asyncio.Event) -> None:
        key = audience_key(self.group)
        while not stop.is_set():
            joins = self._joins
            try:
                alone = await self._store.audience(key) <= 1
            except Exception:
                log.warning("counting the viewers of %s failed", self.group, exc_info=True)
                alone = False
            if stop.is_set():
                return
            if joins == self._joins:  # nobody said they joined while this counted
                self._set_alone(alone)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._count_every)

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
