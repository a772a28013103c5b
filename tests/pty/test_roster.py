"""The roster's entries: what clients see of them, and which are live (pty/roster.py)."""

from __future__ import annotations

import asyncio
import time

from pty.roster import Entry, LocalStore, live


def entry(viewer: str, since: str, until: float, share: str = "") -> Entry:
    return Entry(viewer, f"user:{viewer}", "observer", since, f"chan-{viewer}", share, not share, until)


def test_live_entries_come_oldest_first_and_stale_or_unreadable_ones_are_named() -> None:
    now = time.time()
    entries = {
        "b": entry("b", "2026-01-01T00:00:02", now + 10).dumps(),
        "a": entry("a", "2026-01-01T00:00:01", now + 10).dumps(),
        "dead": entry("dead", "2026-01-01T00:00:00", now - 1).dumps(),
        "junk": "{not json",
        "wrong": '{"id": "wrong"}',
    }
    alive, stale = live(entries, now)
    assert [e.id for e in alive] == ["a", "b"]
    assert sorted(stale) == ["dead", "junk", "wrong"]


def test_clients_see_neither_the_channel_nor_the_deadline() -> None:
    shown = entry("a", "2026-01-01T00:00:01", 1.0, share="shr-1").public()
    assert shown == {
        "id": "a",
        "label": "user:a",
        "mode": "observer",
        "since": "2026-01-01T00:00:01",
        "link": True,
        "may_control": False,
    }


def test_the_local_store_forgets_an_empty_roster() -> None:
    store = LocalStore()

    async def scenario() -> None:
        await store.put("k", "a", "x", 1.0)
        await store.put("k", "b", "y", 1.0)
        assert await store.entries("k") == {"a": "x", "b": "y"}
        assert await store.remove("k", "a", "zzz") == 1
        assert await store.remove("k", "b") == 1
        assert store.entries_now("k") == {}
        assert "k" not in store._rosters

    asyncio.run(scenario())
