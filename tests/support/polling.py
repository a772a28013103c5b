"""Waiting in tests for a state nothing announces: a kernel's, a file's, another process's."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable

# Generous: a slow or busy machine must not fail a test that waits for something that happens.
WITHIN = 30.0
EVERY = 0.05


async def wait_until(
    condition: Callable[[], bool | Awaitable[bool]], within: float = WITHIN, every: float = EVERY
) -> None:
    """Poll `condition` (a function, or a coroutine function) until it is true.

    Fails the test if it is still false after `within` seconds. Polling is for states with no
    event to wait on; where the code under test has one, the test waits on that instead.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(
                f"{getattr(condition, '__qualname__', condition)} still false after {within}s"
            )
        await asyncio.sleep(every)
