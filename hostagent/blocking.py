"""Blocking file-system work (/proc scans, cgroup and sandbox-directory files) run off the event loop.

A capsule with thousands of processes makes a /proc scan slow, and a cgroup write waits on the
kernel (its cgroup locks, a freeze of many tasks): on the loop either would stall the terminals
of every other capsule this agent serves.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable
from typing import ParamSpec, TypeVar

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")


async def run_blocking(func: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """`func(*args, **kwargs)` in a thread of the loop's default executor.

    A thread cannot be interrupted, so a cancelled caller still waits for it to finish before
    the cancellation goes on: returning at once would release the lock the caller holds (a
    sandbox's, in `Lifecycle`) with the work still running, and a resume could then overtake
    the freeze before it.
    """
    future = asyncio.get_running_loop().run_in_executor(None, functools.partial(func, *args, **kwargs))
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        while not future.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait([future])
        if not future.cancelled() and (error := future.exception()) is not None:
            log.warning(
                "%s failed after its caller was cancelled: %s", getattr(func, "__name__", func), error
            )
        raise
