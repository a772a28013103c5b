"""The leader's pacing (pty.pacing.Pacer.pace) on its own, with its presence's count and the
notes in process memory."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from pty import pacing, presence
from pty.leases import LocalLeases, audience_key, progress_key
from pty.pacing import PACE_WINDOW, PROGRESS_EVENT, SHARED_WINDOW, SLOW_GRACE, Pacer
from pty.presence import Presence

pytestmark = [pytest.mark.timeout(20)]

GROUP = "pty.cap-test.pty-0000abcd"
END = 10 * 1024 * 1024  # how far the leader has read
# The leader counts its viewers when it starts leading and then this often: no test here waits for
# a second count.
COUNT_EVERY = 1.0


class Layer:
    """Records what the audience publishes."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        self.sent.append(message)


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch) -> LocalLeases:
    store = LocalLeases()
    monkeypatch.setattr(pacing, "leases", lambda: store)
    monkeypatch.setattr(presence, "leases", lambda: store)
    return store


class Leader:
    def __init__(self, store: LocalLeases, slow_grace: float = SLOW_GRACE) -> None:
        self.store = store
        self.offset = END  # its own client has everything so far
        self.layer = Layer()
        self.presence = Presence(GROUP, "leader", self.layer, lambda: END, count_every=COUNT_EVERY)
        self.pacer = Pacer(
            GROUP,
            "leader",
            self.layer,
            lambda: self.offset,
            lambda: self.presence.alone,
            slow_grace=slow_grace,
        )

    async def note(self, viewer: str, offset: int) -> None:
        await self.store.join(audience_key(GROUP), viewer)
        await self.store.note_progress(progress_key(GROUP), viewer, offset)


async def paced(leader: Leader, within: float) -> bool:
    """Whether ``pace(END)`` returns within ``within`` seconds."""
    try:
        await asyncio.wait_for(leader.pacer.pace(END), within)
    except TimeoutError:
        return False
    return True


async def test_alone_the_leader_paces_to_its_own_client(store: LocalLeases) -> None:
    leader = Leader(store)
    await store.join(audience_key(GROUP), "leader")
    async with leader.presence.leading():
        await asyncio.sleep(0.05)  # the first count: alone
        leader.offset = END - PACE_WINDOW - 1
        assert not await paced(leader, 0.2)
        leader.offset = END - PACE_WINDOW
        assert await paced(leader, 5)
    assert leader.layer.sent == []  # alone: nobody asked to note anything


async def test_the_slowest_viewer_that_keeps_up_sets_the_pace(store: LocalLeases) -> None:
    leader = Leader(store, slow_grace=60.0)
    await leader.note("leader", END)
    await leader.note("fast", END)
    await leader.note("slow", END - SHARED_WINDOW - 1)
    async with leader.presence.leading():
        assert not await paced(leader, 0.3)  # held back by the slow one
        assert {"type": PROGRESS_EVENT} in leader.layer.sent  # the others were asked to note
        waiting = asyncio.ensure_future(leader.pacer.pace(END))
        await asyncio.sleep(0.1)
        assert not waiting.done()
        await store.note_progress(progress_key(GROUP), "slow", END - SHARED_WINDOW)
        await asyncio.wait_for(waiting, 5)  # back within the window: the leader reads on


async def test_a_viewer_behind_for_longer_than_the_grace_no_longer_holds_the_others(
    store: LocalLeases,
) -> None:
    leader = Leader(store, slow_grace=0.3)
    await leader.note("leader", END)
    await leader.note("fast", END)
    await leader.note("stuck", 0)
    async with leader.presence.leading():
        assert not await paced(leader, 0.1)
        assert await paced(leader, 5)  # once the grace is over
        assert await paced(leader, 0.5)  # and from then on, at once
        await store.note_progress(progress_key(GROUP), "stuck", END)  # it caught up: counted again
        await asyncio.sleep(0.05)  # the leader's next look at the notes is due
        assert await paced(leader, 5)
        await store.note_progress(progress_key(GROUP), "stuck", END - SHARED_WINDOW - 1)
        await asyncio.sleep(0.05)
        assert not await paced(leader, 0.15)  # behind again: a new grace


async def test_when_everyone_is_behind_the_fastest_sets_the_pace(store: LocalLeases) -> None:
    leader = Leader(store, slow_grace=0.1)
    leader.offset = 0
    await leader.note("leader", 0)
    await leader.note("other", END - PACE_WINDOW - 1)
    async with leader.presence.leading():
        assert not await paced(leader, 0.5)  # past the grace, but nobody is within PACE_WINDOW
        await store.note_progress(progress_key(GROUP), "other", END - PACE_WINDOW)
        assert await paced(leader, 5)


class SwallowingStore(LocalLeases):
    """A store whose count, cancelled while it waits for its answer, answers anyway: what a Redis
    client that swallows a cancellation does."""

    def __init__(self) -> None:
        super().__init__()
        self.asked = asyncio.Event()
        self.swallowed = 0

    async def audience(self, key: str) -> int:
        self.asked.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.swallowed += 1
        return 1


async def test_leading_ends_even_when_its_count_swallows_the_cancellation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = SwallowingStore()
    monkeypatch.setattr(presence, "leases", lambda: store)
    audience = Presence(GROUP, "leader", Layer(), lambda: END, count_every=COUNT_EVERY)
    async with audience.leading():
        await store.asked.wait()  # the count is waiting for Redis when leading ends
    assert store.swallowed == 1
    assert not audience._leading
