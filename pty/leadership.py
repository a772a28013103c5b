"""Keeping a session led: take the lease when it is free, run the stream worker while holding it.

Every viewer of a session runs this, on whichever worker it is; only the lease
holder runs a stream. When the holder leaves, or its worker dies and the lease
expires, another viewer takes over and resumes from the byte it has reached.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from .leases import POLL_SECONDS, RENEW_SECONDS, Leases

log = logging.getLogger(__name__)


async def _try(step: Awaitable[bool], what: str) -> bool:
    try:
        return await step
    except Exception:  # Redis away: count as "not leading" and try again later
        log.warning("lease %s failed", what, exc_info=True)
        return False


async def _renew_until_lost(store: Leases, key: str, holder: str) -> None:
    while True:
        await asyncio.sleep(RENEW_SECONDS)
        if not await _try(store.renew(key, holder), "renewal"):
            return


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
