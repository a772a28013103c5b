"""Who watches a terminal session, and how: the roster every viewer of it sees, across workers.

Each viewer keeps one entry (its id, who it is, its mode, since when) in a store shared by every
worker: a Redis hash per session, or this process's memory without Redis (as pty/leases.py
does). An entry names its viewer's channel, so a peer on one worker can change the mode of a
viewer on another. Whoever changes the roster says so to the session's group; every viewer then
reads it and sends its client a ``viewers`` frame if the list changed. Entries carry a deadline
their viewer renews every third of WRENN_PTY_ROSTER_TTL_SECONDS: the entries of a worker that died
are swept by the first viewer to notice, so nobody stays listed forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from asgiref.sync import async_to_sync
from channels.layers import BaseChannelLayer, get_channel_layer
from django.conf import settings
from redis import Redis
from redis import asyncio as aioredis

from . import leases
from .stream import group_name

log = logging.getLogger(__name__)

# Channel-layer events, handled by the consumer: the roster changed (to the group); a viewer's mode
# is changed by someone else (to that viewer's channel); a share link was revoked (to the group).
ROSTER_EVENT = "terminal.viewers"
CONTROL_EVENT = "terminal.control"
REVOKED_EVENT = "terminal.share_revoked"

CONNECTIONS = 8


def new_viewer_id() -> str:
    return "v-" + secrets.token_hex(4)


def roster_key(group: str) -> str:
    return f"wrenn:roster:{group}"


def ttl() -> float:
    return float(settings.PTY_ROSTER_TTL_SECONDS)


@dataclass
class Entry:
    id: str
    label: str
    mode: str
    since: str  # ISO 8601, UTC
    channel: str
    share: str  # the share link it came in on, "" for none
    may_control: bool  # whether it may ever be a peer
    until: float = 0.0  # epoch seconds: past this, its worker is taken for dead

    def public(self) -> dict[str, Any]:
        """What clients see of it."""
        return {
            "id": self.id,
            "label": self.label,
            "mode": self.mode,
            "since": self.since,
            "link": bool(self.share),
            "may_control": self.may_control,
        }

    def dumps(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def loads(cls, text: str | bytes) -> Entry | None:
        try:
            return cls(**json.loads(text))
        except (ValueError, TypeError):
            return None


class Store(Protocol):
    async def put(self, key: str, viewer: str, value: str, ttl: float) -> None: ...
    async def remove(self, key: str, *viewers: str) -> int: ...
    async def entries(self, key: str) -> dict[str, str]: ...
    async def drop(self, key: str) -> None: ...


class LocalStore:
    def __init__(self) -> None:
        self._rosters: dict[str, dict[str, str]] = {}

    async def put(self, key: str, viewer: str, value: str, ttl: float) -> None:
        self._rosters.setdefault(key, {})[viewer] = value

    async def remove(self, key: str, *viewers: str) -> int:
        roster = self._rosters.get(key, {})
        removed = sum(1 for viewer in viewers if roster.pop(viewer, None) is not None)
        if not roster:
            self._rosters.pop(key, None)
        return removed

    async def entries(self, key: str) -> dict[str, str]:
        return self.entries_now(key)

    def entries_now(self, key: str) -> dict[str, str]:
        return dict(self._rosters.get(key, {}))

    async def drop(self, key: str) -> None:
        self._rosters.pop(key, None)


class RedisStore:
    def __init__(self, url: str) -> None:
        pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=CONNECTIONS, timeout=5)
        self._redis = aioredis.Redis(connection_pool=pool)

    async def put(self, key: str, viewer: str, value: str, ttl: float) -> None:
        await leases.answer(self._put(key, viewer, value, ttl))

    async def _put(self, key: str, viewer: str, value: str, ttl: float) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, viewer, value)
            # The whole roster goes once nobody renews any entry of it.
            pipe.pexpire(key, int(ttl * 1000))
            await pipe.execute()

    async def remove(self, key: str, *viewers: str) -> int:
        return int(await leases.answer(self._redis.hdel(key, *viewers)))

    async def entries(self, key: str) -> dict[str, str]:
        found = await leases.answer(self._redis.hgetall(key))
        return {_text(viewer): _text(value) for viewer, value in found.items()}

    async def drop(self, key: str) -> None:
        await leases.answer(self._redis.delete(key))


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


local_store = LocalStore()
_redis_stores: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, RedisStore] = weakref.WeakKeyDictionary()


def store() -> Store:
    if not settings.REDIS_URL:
        return local_store
    loop = asyncio.get_running_loop()
    if loop not in _redis_stores:
        _redis_stores[loop] = RedisStore(settings.REDIS_URL)
    return _redis_stores[loop]


def live(entries: dict[str, str], now: float | None = None) -> tuple[list[Entry], list[str]]:
    """The live entries, oldest first, and the ids of the stale ones (and of unreadable ones)."""
    now = time.time() if now is None else now
    alive: list[Entry] = []
    stale: list[str] = []
    for viewer, text in entries.items():
        entry = Entry.loads(text)
        if entry is None or entry.until < now:
            stale.append(viewer)
        else:
            alive.append(entry)
    alive.sort(key=lambda entry: (entry.since, entry.id))
    return alive, stale


class Roster:
    """One viewer's place in its session's roster. ``send``: hands its client the list."""

    def __init__(
        self,
        group: str,
        layer: BaseChannelLayer,
        entry: Entry,
        send: Callable[[str, list[dict[str, Any]]], Awaitable[None]],
    ) -> None:
        self.group = group
        self.key = roster_key(group)
        self.entry = entry
        self._layer = layer
        self._send = send
        self._store: Store = store()
        self._shown: list[dict[str, Any]] | None = None
        self._lock = asyncio.Lock()
        self._entered = False
        # Lists go to the client once it is attached: a start's first answer stays `started`.
        self._open = False

    async def enter(self) -> None:
        await self._put()
        self._entered = True
        await self.announce()

    async def leave(self) -> None:
        if not self._entered:
            return
        self._entered = False
        with contextlib.suppress(Exception):  # Redis away: the entry expires on its own
            await self._store.remove(self.key, self.entry.id)
            await self.announce()

    async def ended(self) -> None:
        """The session's process exited: its roster goes."""
        with contextlib.suppress(Exception):
            await self._store.drop(self.key)

    async def set_mode(self, mode: str) -> None:
        self.entry.mode = mode
        await self._put()
        await self.announce()

    async def announce(self) -> None:
        await self._layer.group_send(self.group, {"type": ROSTER_EVENT})

    async def find(self, viewer_id: str) -> Entry | None:
        alive, _ = live(await self._store.entries(self.key))
        return next((entry for entry in alive if entry.id == viewer_id), None)

    async def open(self) -> None:
        """The viewer is attached (started, or caught up): its client gets lists from now on."""
        self._open = True
        await self.changed()

    async def changed(self) -> None:
        """The roster changed: the client gets the new list, if it differs from the last it got."""
        if not self._open:
            return
        async with self._lock:
            alive, _ = live(await self._store.entries(self.key))
            shown = [entry.public() for entry in alive]
            if shown != self._shown:
                self._shown = shown
                await self._send(self.entry.id, shown)

    async def keep(self) -> None:
        """Renews this viewer's entry and sweeps the dead, every third of the TTL, for good."""
        while True:
            await asyncio.sleep(ttl() / 3)
            try:
                await self._put()
                _, stale = live(await self._store.entries(self.key))
                if stale and await self._store.remove(self.key, *stale):
                    log.info("roster of %s: %d stale viewer(s) removed", self.group, len(stale))
                    await self.announce()
                await self.changed()
            except Exception:  # Redis away for a moment: the next round tries again
                log.warning("renewing the roster entry of %s failed", self.group, exc_info=True)

    async def _put(self) -> None:
        self.entry.until = time.time() + ttl()
        await self._store.put(self.key, self.entry.id, self.entry.dumps(), ttl())


# --- from outside a socket (the API, the admin) ---------------------------------------------------


def announce_revoked(capsule_id: str, tag: str, share_id: str) -> None:
    """Tells the session's viewers that a share link was revoked: those on it close at once."""
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(
            group_name(capsule_id, tag), {"type": REVOKED_EVENT, "share": share_id}
        )
    except Exception:  # their next credential check closes them all the same
        log.warning("announcing the revocation of %s failed", share_id, exc_info=True)


def viewers_now(capsule_id: str, tag: str) -> list[dict[str, Any]]:
    """The session's live viewers, for a synchronous caller (the admin's list)."""
    return viewers_of([(capsule_id, tag)])[(capsule_id, tag)]


def viewers_of(sessions: Iterable[tuple[str, str]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """The live viewers of each (capsule id, tag), read in one round trip (the home page's list)."""
    wanted = list(dict.fromkeys(sessions))
    keys = [roster_key(group_name(capsule_id, tag)) for capsule_id, tag in wanted]
    if not settings.REDIS_URL:
        found = [local_store.entries_now(key) for key in keys]
    elif keys:
        client = Redis.from_url(settings.REDIS_URL, socket_timeout=2)
        try:
            with client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.hgetall(key)
                replies = pipe.execute()
        finally:
            client.close()
        found = [{_text(k): _text(v) for k, v in reply.items()} for reply in replies]
    else:
        found = []
    return {
        session: [entry.public() for entry in live(entries)[0]]
        for session, entries in zip(wanted, found, strict=True)
    }
