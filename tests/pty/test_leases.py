"""Session leases: in process memory and in the real Redis, and the loop that keeps a session led."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest

from pty import leases as lease_module
from pty.leadership import Renewals, keep_leading
from pty.leases import RENEW_BATCH, RENEW_SECONDS, TTL_MS, Leases, LocalLeases, RedisLeases
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
    assert await store.renew_all([(key, "a"), (key, "b")]) == [True, False]


async def test_release_lets_the_next_holder_in(store: Leases, key: str) -> None:
    await store.acquire(key, "a")
    await store.release(key, "b")  # not b's to release
    assert not await store.acquire(key, "b")
    await store.release(key, "a")
    assert await store.acquire(key, "b")


async def test_an_unrenewed_lease_expires(store: Leases, key: str) -> None:
    await store.acquire(key, "a")
    await asyncio.sleep(TTL_MS / 1000 + 0.3)
    assert await store.renew_all([(key, "a")]) == [False]
    assert await store.acquire(key, "b")


async def test_renewing_many_leases_at_once(store: Leases, key: str) -> None:
    held = [(f"{key}:{n}", f"holder-{n}") for n in range(RENEW_BATCH + 3)]  # more than one batch
    for lease, holder in held:
        assert await store.acquire(lease, holder)
    await store.release(held[1][0], held[1][1])
    assert await store.acquire(held[1][0], "someone else")
    asked = [*held, (f"{key}:never", "nobody")]
    assert await store.renew_all(asked) == [True, False, *[True] * (len(held) - 2), False]
    assert await store.renew_all([]) == []
    await asyncio.sleep(TTL_MS / 1000 * 0.6)
    assert all(await store.renew_all(held[2:]))  # the first renewal really extended them
    await asyncio.sleep(TTL_MS / 1000 * 0.6)
    assert all(await store.renew_all(held[2:]))


class CountingLeases(LocalLeases):
    """Records the size of every renewal call; fails them while ``failing``."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[int] = []
        self.failing = False
        self._renewed = asyncio.Condition()

    async def renew_all(self, held: list[tuple[str, str]]) -> list[bool]:
        self.calls.append(len(held))
        async with self._renewed:
            self._renewed.notify_all()
        if self.failing:
            raise ConnectionError("redis away")
        return await super().renew_all(held)

    async def called(self, times: int) -> None:
        async with self._renewed:
            await self._renewed.wait_for(lambda: len(self.calls) >= times)


async def test_a_worker_renews_all_its_leases_in_one_call(key: str) -> None:
    store = CountingLeases()
    renewals = Renewals(store)
    lost = []
    for n in range(50):
        assert await store.acquire(f"{key}:{n}", "me")
        lost.append(renewals.hold(f"{key}:{n}", "me"))
    rounds = int(TTL_MS / 1000 / RENEW_SECONDS) + 2  # past the TTL: the leases live by renewal alone
    await store.called(rounds)
    assert store.calls == [50] * rounds  # one call per round, for all of them
    assert len(store.held()) == 50
    assert not any(future.done() for future in lost)
    await store.release(f"{key}:7", "me")
    assert await store.acquire(f"{key}:7", "thief")
    await asyncio.wait_for(lost[7], 10)  # taken by someone else: that one is lost, the rest kept
    assert not any(future.done() for n, future in enumerate(lost) if n != 7)
    await store.called(len(store.calls) + 1)
    assert store.calls[-1] == 49
    for n in range(50):
        renewals.drop(f"{key}:{n}", "me")
    await asyncio.sleep(RENEW_SECONDS * 3)
    assert store.calls[-1] == 49  # with nothing held, renewing stops


async def test_a_lease_is_given_up_only_when_failed_renewals_reach_its_ttl(key: str) -> None:
    store = CountingLeases()
    renewals = Renewals(store)
    assert await store.acquire(key, "me")
    lost = renewals.hold(key, "me")
    await store.called(1)
    store.failing = True
    await store.called(2)
    assert not lost.done()  # one failure, soon after a renewal: retried, the lease still runs
    store.failing = False
    await store.called(3)
    assert not lost.done()
    store.failing = True
    await asyncio.wait_for(lost, 10)  # failing for good: given up once the TTL is reached
    renewals.drop(key, "me")


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


async def test_cancelling_a_caller_cancels_it_even_when_the_redis_call_swallows_the_cancellation() -> None:
    waiting, swallowed = asyncio.Event(), asyncio.Event()

    async def swallowing_call() -> int:
        # What the Redis client can do: take the cancellation and answer anyway.
        waiting.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            swallowed.set()
        return 1

    async def caller_loop() -> None:
        # A loop like the leader's count: errors are retried, so only a cancellation ends it.
        while True:
            await lease_module.answer(swallowing_call())

    caller = asyncio.create_task(caller_loop())
    await waiting.wait()
    caller.cancel()
    results = await asyncio.gather(caller, return_exceptions=True)
    assert isinstance(results[0], asyncio.CancelledError)
    await swallowed.wait()  # the call itself was cancelled too


async def test_an_answer_comes_back_through_it(store: Leases, key: str) -> None:
    assert await store.acquire(key, "a")  # (the Redis store's calls all go through `answer`)
    assert await store.renew_all([(key, "a")]) == [True]
