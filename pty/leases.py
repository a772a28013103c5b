"""Who leads (reads the gRPC stream of) each terminal session, and how far its viewers are.

A lead is a lease: a key that names its holder and expires unless renewed. In
production it lives in Redis, shared by all workers; without Redis (the
one-process quick start) it lives in this process. A worker that dies stops
renewing, the key expires, and a viewer on another worker takes over.

Beside the lease, each viewer notes the offset it has sent its client up to, so
the leader can pace the stream to its viewers (see pty/pacing.py).
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Awaitable
from typing import Any, Protocol, TypeVar

from django.conf import settings
from redis import asyncio as aioredis

# Renew every RENEW, expire after TTL, and viewers try to take over every POLL:
# a SIGKILLed leader is replaced within TTL + POLL (1.5 s).
TTL_MS = 1200
RENEW_SECONDS = 0.3
POLL_SECONDS = 0.3
# Redis connections a worker uses for leases and the audience at most.
CONNECTIONS = 32
# Progress notes go after this long without one. The set of a session's viewers goes when the
# session ends (a viewer whose worker died stays in it until then, costing only publishes).
PROGRESS_TTL_MS = 600_000

# KEYS: the leases; ARGV: their holders, then the TTL. One result per lease: 1 renewed, 0 lost.
_RENEW_ALL = """
local ttl = ARGV[#KEYS + 1]
local renewed = {}
for i, key in ipairs(KEYS) do
  if redis.call('get', key) == ARGV[i] then
    renewed[i] = redis.call('pexpire', key, ttl)
  else
    renewed[i] = 0
  end
end
return renewed
"""
# Leases renewed by one script call at most, so that Redis is not held for long at a time.
RENEW_BATCH = 500
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""


T = TypeVar("T")


async def answer(call: Awaitable[T]) -> T:
    """Awaits a Redis call so that cancelling the caller always cancels the caller.

    The Redis client can swallow a cancellation that arrives while it waits for an answer (and
    answer anyway); a loop that catches its errors would then go on for good, and the connection
    whose tasks it belongs to could never finish closing. The call runs in a task of its own,
    shielded: the caller's cancellation is raised in the caller at once, and the call is cancelled
    (it ends within the client's socket timeout, whatever it does with that). `call` must hold
    everything that uses its Redis connection (a whole pipeline, not only its `execute()`), since
    the caller may be gone before it ends.
    """
    task = asyncio.ensure_future(call)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        task.cancel()
        task.add_done_callback(_retrieved)
        raise


def _retrieved(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # a failure after the caller left is nobody's to handle


class Leases(Protocol):
    async def acquire(self, key: str, holder: str) -> bool: ...
    async def renew_all(self, held: list[tuple[str, str]]) -> list[bool]: ...
    async def release(self, key: str, holder: str) -> None: ...
    async def note_progress(self, key: str, viewer: str, offset: int) -> None: ...
    async def progress(self, key: str) -> dict[str, int]: ...
    async def forget_progress(self, key: str, viewer: str) -> None: ...
    async def join(self, key: str, viewer: str) -> None: ...
    async def leave(self, key: str, viewer: str) -> None: ...
    async def audience(self, key: str) -> int: ...
    async def drop(self, *keys: str) -> None: ...


class LocalLeases:
    def __init__(self) -> None:
        self._held: dict[str, tuple[str, float]] = {}
        self._progress: dict[str, dict[str, int]] = {}
        self._viewers: dict[str, set[str]] = {}

    def _live(self, key: str) -> str | None:
        holder, expires = self._held.get(key, ("", 0.0))
        if holder and expires > time.monotonic():
            return holder
        self._held.pop(key, None)
        return None

    async def acquire(self, key: str, holder: str) -> bool:
        if self._live(key) is None:
            self._held[key] = (holder, time.monotonic() + TTL_MS / 1000)
            return True
        return False

    async def renew_all(self, held: list[tuple[str, str]]) -> list[bool]:
        return [self._renew(key, holder) for key, holder in held]

    def _renew(self, key: str, holder: str) -> bool:
        if self._live(key) != holder:
            return False
        self._held[key] = (holder, time.monotonic() + TTL_MS / 1000)
        return True

    async def release(self, key: str, holder: str) -> None:
        if self._live(key) == holder:
            del self._held[key]

    async def note_progress(self, key: str, viewer: str, offset: int) -> None:
        self._progress.setdefault(key, {})[viewer] = offset

    async def progress(self, key: str) -> dict[str, int]:
        return dict(self._progress.get(key, {}))

    async def forget_progress(self, key: str, viewer: str) -> None:
        viewers = self._progress.get(key, {})
        viewers.pop(viewer, None)
        if not viewers:
            self._progress.pop(key, None)

    async def join(self, key: str, viewer: str) -> None:
        self._viewers.setdefault(key, set()).add(viewer)

    async def leave(self, key: str, viewer: str) -> None:
        viewers = self._viewers.get(key, set())
        viewers.discard(viewer)
        if not viewers:
            self._viewers.pop(key, None)

    async def audience(self, key: str) -> int:
        return len(self._viewers.get(key, ()))

    async def drop(self, *keys: str) -> None:
        for key in keys:
            self._viewers.pop(key, None)
            self._progress.pop(key, None)

    def held(self) -> dict[str, str]:
        """Live leases, for tests."""
        return {key: holder for key in list(self._held) if (holder := self._live(key)) is not None}


class RedisLeases:
    def __init__(self, url: str) -> None:
        # Callers wait for a free connection rather than fail: with hundreds of sessions on a
        # worker, the default pool (100 connections, failing when all are busy) loses leases
        # under load.
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=CONNECTIONS, timeout=TTL_MS / 1000
        )
        self._redis = aioredis.Redis(connection_pool=pool)

    async def acquire(self, key: str, holder: str) -> bool:
        return bool(await answer(self._redis.set(key, holder, nx=True, px=TTL_MS)))

    async def renew_all(self, held: list[tuple[str, str]]) -> list[bool]:
        renewed: list[bool] = []
        for at in range(0, len(held), RENEW_BATCH):
            batch = held[at : at + RENEW_BATCH]
            keys = [key for key, _ in batch]
            holders = [holder for _, holder in batch]
            results = await answer(self._redis.eval(_RENEW_ALL, len(keys), *keys, *holders, TTL_MS))
            renewed.extend(bool(result) for result in results)
        return renewed

    async def release(self, key: str, holder: str) -> None:
        await answer(self._redis.eval(_RELEASE, 1, key, holder))

    async def note_progress(self, key: str, viewer: str, offset: int) -> None:
        # The whole pipeline in the one task: its connection goes back to the pool only when done.
        await answer(self._note_progress(key, viewer, offset))

    async def _note_progress(self, key: str, viewer: str, offset: int) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hset(key, viewer, offset)
            pipe.pexpire(key, PROGRESS_TTL_MS)
            await pipe.execute()

    async def progress(self, key: str) -> dict[str, int]:
        noted = await answer(self._redis.hgetall(key))
        return {
            viewer.decode() if isinstance(viewer, bytes) else viewer: int(offset)
            for viewer, offset in noted.items()
        }

    async def forget_progress(self, key: str, viewer: str) -> None:
        await answer(self._redis.hdel(key, viewer))

    async def join(self, key: str, viewer: str) -> None:
        await answer(self._redis.sadd(key, viewer))

    async def drop(self, *keys: str) -> None:
        await answer(self._redis.delete(*keys))

    async def leave(self, key: str, viewer: str) -> None:
        await answer(self._redis.srem(key, viewer))

    async def audience(self, key: str) -> int:
        return int(await answer(self._redis.scard(key)))


local_leases = LocalLeases()
# Redis connections belong to the event loop that made them (tests run one loop per test).
_redis_leases: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, RedisLeases] = weakref.WeakKeyDictionary()


def leases() -> Leases:
    if not settings.REDIS_URL:
        return local_leases
    loop = asyncio.get_running_loop()
    if loop not in _redis_leases:
        _redis_leases[loop] = RedisLeases(settings.REDIS_URL)
    return _redis_leases[loop]


def lease_key(group: str) -> str:
    return f"wrenn:lead:{group}"


def progress_key(group: str) -> str:
    return f"wrenn:progress:{group}"


def audience_key(group: str) -> str:
    return f"wrenn:viewers:{group}"
