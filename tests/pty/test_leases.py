"""Session leases: in process memory and in the real Redis, and the loop that keeps a session led."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest

from pty import leases as lease_module
from pty.leadership import keep_leading
from pty.leases import TTL_MS, Leases, LocalLeases, RedisLeases
from tests.support.stack import REDIS_URL

pytestmark = [pytest.mark.timeout(20)]


@pytest.fixture(params=["local", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Leases]:
    if request.param == "local":
        yield LocalLeases()
    else:
        yield RedisLeases(REDIS_URL)


@pytest.fixture
def key() -> str:
    return f"wrenn:test:{secrets.token_hex(4)}"


async def test_one_holder_at_a_time(store: Leases, key: str) -> None:
    assert await store.acquire(key, "a")
    assert not await store.acquire(key, "b")
    assert await store.renew(key, "a")
    assert not await store.renew(key, "b")


async def test_release_lets_the_next_holder_in(store: Leases, key: str) -> None:
    await store.acquire(key, "a")
    await store.release(key, "b")  # not b's to release
    assert not await store.acquire(key, "b")
    await store.release(key, "a")
    assert await store.acquire(key, "b")


async def test_an_unrenewed_lease_expires(store: Leases, key: str) -> None:
    await store.acquire(key, "a")
    await asyncio.sleep(TTL_MS / 1000 + 0.3)
    assert not await store.renew(key, "a")
    assert await store.acquire(key, "b")


async def test_the_holder_streams_and_a_follower_takes_over_when_it_stops(monkeypatch: Any, key: str) -> None:
    store = LocalLeases()
    monkeypatch.setattr(lease_module, "local_leases", store)
    stop_first = asyncio.Event()
    streams: list[str] = []

    async def first_stream() -> int:
        streams.append("first")
        await stop_first.wait()
        raise asyncio.CancelledError  # the first viewer goes away mid-stream

    async def second_stream() -> int:
        streams.append("second")
        return 0

    first = asyncio.create_task(keep_leading(store, key, "first", first_stream))
    await asyncio.sleep(0.1)
    second = asyncio.create_task(keep_leading(store, key, "second", second_stream))
    await asyncio.sleep(0.5)
    assert streams == ["first"]  # the follower waits while the lease is held and renewed
    first.cancel()
    assert await asyncio.wait_for(second, 5) == 0
    assert streams == ["first", "second"]
    assert store.held() == {}
