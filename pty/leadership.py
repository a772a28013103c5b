"""Keeping a session led: take the lease when it is free, run the stream worker while holding it.

Every viewer of a session runs this, on whichever worker it is; only the lease
holder runs a stream. When the holder leaves, or its worker dies and the lease
expires, another viewer takes over and resumes from the byte it has reached.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from .leases import POLL_SECONDS, RENEW_SECONDS, TTL_MS, Leases

log = logging.getLogger(__name__)


async def _try(step: Awaitable[bool], what: str) -> bool:
    try:
        return await step
    except Exception:  # Redis away: count as "not leading" and try again later
        log.warning("lease %s failed", what, exc_info=True)
        return False


async def _renew_until_lost(store: Leases, key: str, holder: str) -> None:
    """Returns once the lease is someone else's, or could not be renewed before it expired."""
    loop = asyncio.get_running_loop()
    renewed_at = loop.time()
    while True:
        await asyncio.sleep(RENEW_SECONDS)
        try:
            if not await store.renew(key, holder):
                return
            renewed_at = loop.time()
        except Exception:  # Redis slow or away: the lease holds until TTL after the last renewal
            if loop.time() + RENEW_SECONDS - renewed_at >= TTL_MS / 1000:
                log.warning("could not renew the lease %s in time", key, exc_info=True)
                return
            log.warning("renewing the lease %s failed; trying again", key, exc_info=True)


async def keep_leading(store: Leases, key: str, holder: str, stream: Callable[[], Awaitable[int]]) -> int:
    """Leads whenever possible until the process exits; returns its exit code.

    ``stream()`` opens and runs the stream worker; StreamFailed from it ends this too.
    """
    while True:
        if not await _try(store.acquire(key, holder), "acquisition"):
            await asyncio.sleep(POLL_SECONDS)
            continue
        log.info("leading %s", key)
        running = asyncio.ensure_future(stream())
        renewing = asyncio.ensure_future(_renew_until_lost(store, key, holder))
        try:
            await asyncio.wait({running, renewing}, return_when=asyncio.FIRST_COMPLETED)
            if running.done():
                return running.result()
            log.warning("lost the lead of %s; following again", key)
        finally:
            for task in (running, renewing):
                task.cancel()
            await asyncio.gather(running, renewing, return_exceptions=True)
            await _try(_released(store, key, holder), "release")


async def _released(store: Leases, key: str, holder: str) -> bool:
    await store.release(key, holder)
    return True
