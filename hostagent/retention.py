"""What the registries of terminal sessions and of processes share: items by (sandbox_id, tag),
kept for a while after they end so that a late attach still gets the exit code (and, resuming,
the tail of the output), and killed together when their sandbox or the agent goes away."""

from __future__ import annotations

import asyncio
import logging
from typing import Generic, Protocol, TypeVar

log = logging.getLogger(__name__)

Key = tuple[str, str]
# A late attach to something that ended this recently still gets its exit code.
RETAIN_EXITED = 60.0
KILL_TIMEOUT = 5.0


class Retained(Protocol):
    sandbox_id: str
    tag: str
    finished: asyncio.Event

    async def kill(self, closing: bool = False) -> list[int]: ...


Item = TypeVar("Item", bound=Retained)


class Retaining(Generic[Item]):
    # What the items are, in log lines.
    kind = "items"

    def __init__(self, retain_exited: float = RETAIN_EXITED) -> None:
        self._retain = retain_exited
        self._items: dict[Key, Item] = {}
        self._expiry: dict[Key, asyncio.TimerHandle] = {}

    def _on_finish(self, item: Item) -> None:
        key = (item.sandbox_id, item.tag)
        self._expiry[key] = asyncio.get_running_loop().call_later(self._retain, self._forget, key, item)

    def _forget(self, key: Key, item: Item) -> None:
        self._expiry.pop(key, None)
        if self._items.get(key) is item:
            del self._items[key]

    async def close_sandbox(self, sandbox_id: str) -> None:
        """Kill every item of the sandbox, wait for them to end and forget them."""
        await self._close([k for k in self._items if k[0] == sandbox_id])

    async def close_all(self) -> None:
        await self._close(list(self._items))

    async def _close(self, keys: list[Key]) -> None:
        items = [self._items[k] for k in keys]
        for item in items:
            await item.kill(closing=True)
        waits = [asyncio.create_task(item.finished.wait()) for item in items]
        if waits:
            _done, pending = await asyncio.wait(waits, timeout=KILL_TIMEOUT)
            for task in pending:
                task.cancel()
            if pending:
                log.warning("%d %s did not end within %ss of SIGKILL", len(pending), self.kind, KILL_TIMEOUT)
        for key, item in zip(keys, items, strict=True):
            timer = self._expiry.pop(key, None)
            if timer is not None:
                timer.cancel()
            if self._items.get(key) is item:
                del self._items[key]
