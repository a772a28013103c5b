"""Keeping a session led: take the lease when it is free, run the stream worker while holding it.

Every viewer of a session runs this, on whichever worker it is; only the lease
holder runs a stream. When the holder leaves, or its worker dies and the lease
expires, another viewer takes over and resumes from the byte it has reached.

A worker renews all the leases it holds together (``Renewals``): one Redis call every
RENEW_SECONDS however many sessions it leads. With one call per lease, the calls grow with
the sessions; under load they fall behind the TTL, and leases expire under live leaders.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from .leases import POLL_SECONDS, RENEW_SECONDS, TTL_MS, Leases

log = logging.getLogger(__name__)


async def _try(step: Awaitable[bool], what: str) -> bool:
    try:
        return await step
    except Exception:  # Redis away: count as "not leading" and try again later
        log.warning("lease %s failed", what, exc_info=True)
        return False


class _Held:
    def __init__(self, renewed_at: float) -> None:
        self.renewed_at = renewed_at  # when the lease was last known to run TTL from
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()


class Renewals:
    """The leases one event loop holds in one store, renewed together every RENEW_SECONDS."""

    def __init__(self, store: Leases) -> None:
        self.store = store
        self._held: dict[tuple[str, str], _Held] = {}
        self._task: asyncio.Task[None] | None = None

    def hold(self, key: str, holder: str) -> asyncio.Future[None]:
        """Keeps renewing a lease just acquired; the future resolves if it is lost."""
        held = _Held(asyncio.get_running_loop().time())
        self._held[key, holder] = held
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._renew())
        return held.lost

    def drop(self, key: str, holder: str) -> None:
        """Stops renewing (the lease is released, or lost)."""
        self._held.pop((key, holder), None)

    async def _renew(self) -> None:
        loop = asyncio.get_running_loop()
        while self._held:
            await asyncio.sleep(RENEW_SECONDS)
            held = list(self._held.items())
            if not held:
                break
            asked_at = loop.time()
            try:
                renewed = await self.store.renew_all([lease for lease, _ in held])
            except Exception:  # Redis slow or away: each lease holds until TTL after its last renewal
                log.warning("renewing %d leases failed; trying again", len(held), exc_info=True)
                late = loop.time() + RENEW_SECONDS
                for lease, state in held:
                    if late - state.renewed_at >= TTL_MS / 1000:
                        log.warning("could not renew the lease %s in time", lease[0])
                        self._lose(lease, state)
                continue
            for (lease, state), ok in zip(held, renewed, strict=True):
                if ok:
                    state.renewed_at = asked_at
                else:
                    self._lose(lease, state)

    def _lose(self, lease: tuple[str, str], state: _Held) -> None:
        if self._held.get(lease) is state:
            del self._held[lease]
        if not state.lost.done():
            state.lost.set_result(None)


_renewals: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Renewals] = weakref.WeakKeyDictionary()


def renewals_for(store: Leases) -> Renewals:
    """This event loop's renewals in ``store`` (tests run one loop per test)."""
    loop = asyncio.get_running_loop()
    renewals = _renewals.get(loop)
    if renewals is None or renewals.store is not store:
        renewals = _renewals[loop] = Renewals(store)
    return renewals


async def keep_leading(store: Leases, key: str, holder: str, stream: Callable[[], Awaitable[int]]) -> int:
    """Leads whenever possible until the process exits; returns its exit code.

    ``stream()`` opens and runs the stream worker; StreamFailed from it ends this too.
    """
    renewals = renewals_for(store)
    while True:
        if not await _try(store.acquire(key, holder), "acquisition"):
            await asyncio.sleep(POLL_SECONDS)
            continue
        log.info("leading %s", key)
        lost = renewals.hold(key, holder)
        running = asyncio.ensure_future(stream())
        try:
            either: list[asyncio.Future[Any]] = [running, lost]
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            if running.done():
                return running.result()
            log.warning("lost the lead of %s; following again", key)
        finally:
            renewals.drop(key, holder)
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
            await _try(_released(store, key, holder), "release")


async def _released(store: Leases, key: str, holder: str) -> bool:
    await store.release(key, holder)
    return True
