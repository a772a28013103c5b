"""Observers, share links and the roster of viewers on the real stack: two daphne workers, Redis,
PostgreSQL and a real host agent. Every check reads what a client received, or the audit trail
as the database holds it."""

from __future__ import annotations

import asyncio
import http.client
import json
import signal
import textwrap
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row
from websockets.asyncio.client import connect

from pty import modes
from shares import links as share_links
from tests.support.polling import wait_until
from tests.support.stack import Stack, running_stack
from tests.support.terminal import JSON_DIALECT, Terminal

pytestmark = [pytest.mark.timeout(180)]

Open = Callable[..., Any]
# Prints what it reads, so a test sees what reached the session; 30 rows by 100 columns.
ECHO = ["-c", "stty -echo; echo READY; while read line; do echo got:$line; done"]
SIZE = {"cols": 100, "rows": 30}
ROSTER_TTL = 3


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Two daphne workers; a short roster TTL and credential check, so a test sees them act."""
    env = {"WRENN_PTY_ROSTER_TTL_SECONDS": str(ROSTER_TTL), "WRENN_PTY_CREDENTIAL_CHECK_SECONDS": "1"}
    with running_stack(Path(tmp_path_factory.mktemp("observers")), workers=2, env=env) as running:
        yield running


@pytest.fixture(scope="module")
def demo(cluster: Stack) -> dict[str, Any]:
    return cluster.demo()


def api(
    stack: Stack, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=60)
    try:
        sent = {"Content-Type": "application/json", **(headers or {})}
        connection.request(method, path, body=None if body is None else json.dumps(body), headers=sent)
        response = connection.getresponse()
        raw = response.read()
        return response.status, json.loads(raw) if raw else None
    finally:
        connection.close()


def share(stack: Stack, demo: dict[str, Any], tag: str, **body: Any) -> dict[str, Any]:
    status, created = api(
        stack,
        "POST",
        f"/v1/capsules/{demo['capsule_id']}/pty/{tag}/shares",
        body,
        {"X-API-Key": demo["api_key"]},
    )
    assert status == 201, created
    return dict(created)


def revoke(stack: Stack, demo: dict[str, Any], tag: str, share_id: str) -> None:
    path = f"/v1/capsules/{demo['capsule_id']}/pty/{tag}/shares/{share_id}"
    status, body = api(stack, "DELETE", path, headers={"X-API-Key": demo["api_key"]})
    assert status == 204, body


def shell(stack: Stack, code: str) -> str:
    """What `code` printed last, run by `manage.py shell` (which prints a line of its own first)."""
    printed = stack.manage("shell", "-c", textwrap.dedent(code)).strip()
    return printed.splitlines()[-1] if printed else ""


def observe_key(stack: Stack, demo: dict[str, Any]) -> str:
    """A new API key of the demo team with the terminal:observe scope."""
    return shell(
        stack,
        f"""
        from capsules.keys import create_api_key
        from capsules.models import Team
        key, raw = create_api_key(Team.objects.get(pk="{demo["team_id"]}"), "watcher")
        key.scope = "terminal:observe"
        key.save()
        print(raw)
        """,
    )


def access_token(stack: Stack, username: str, password: str) -> str:
    status, body = api(stack, "POST", "/v1/auth/token", {"username": username, "password": password})
    assert status == 200, body
    return str(body["access"])


def audit_rows(stack: Stack, **where: str) -> list[dict[str, Any]]:
    clauses = " AND ".join(f"{name} = %({name})s" for name in where) or "TRUE"
    with (
        psycopg.connect(stack.env["DATABASE_URL"]) as conn,
        conn.cursor(row_factory=dict_row) as cur,
    ):
        cur.execute(f"SELECT * FROM audit_auditevent WHERE {clauses} ORDER BY id", where)  # noqa: S608 - test-made names
        return list(cur.fetchall())


@pytest.fixture
def viewer(cluster: Stack, demo: dict[str, Any]) -> Open:
    @asynccontextmanager
    async def open_(
        worker: int, headers: list[tuple[str, str]] | None = None, route: str = "/v1/capsules"
    ) -> AsyncIterator[Terminal]:
        url = f"{cluster.ws_url(worker)}{route}/{demo['capsule_id']}/pty"
        sent = [("X-API-Key", demo["api_key"])] if headers is None else headers
        async with connect(
            url, subprotocols=JSON_DIALECT, additional_headers=sent, max_size=None
        ) as websocket:
            yield Terminal.over_websocket(websocket)

    return open_


async def start_echo(term: Terminal) -> str:
    tag = str((await term.start(cmd="/bin/sh", args=ECHO, **SIZE))["tag"])
    await term.read_until(b"READY")
    return tag


async def test_an_observer_on_another_worker_gets_every_byte_and_cannot_touch(
    cluster: Stack, demo: dict[str, Any], viewer: Open
) -> None:
    async with viewer(0) as peer, viewer(1) as watcher:
        tag = await start_echo(peer)
        await watcher.send(type="connect", tag=tag, mode="observer", offset=0)
        await watcher.read_until(b"READY")
        for frame, refusal in (
            ({"type": "input", "data": "c25lYWt5Cg=="}, modes.INPUT_REFUSED),  # "sneaky\n"
            ({"type": "resize", "cols": 20, "rows": 5}, modes.RESIZE_REFUSED),
            ({"type": "kill"}, modes.KILL_REFUSED),
        ):
            await watcher.send(**frame)
            assert await watcher.expect("error") == {"type": "error", "data": refusal, "fatal": False}
        for line in range(50):
            await peer.type(f"line-{line}\n")
        await peer.type("size\n")
        await peer.read_until(b"got:size")
        await watcher.read_until(b"got:size")
        assert bytes(watcher.output) == bytes(peer.output)
        assert b"sneaky" not in watcher.output
    kills = audit_rows(cluster, action="terminal.kill", session_tag=tag)
    assert [(row["outcome"], row["reason"]) for row in kills] == [("failure", modes.KILL_REFUSED)]
    joins = audit_rows(cluster, action="terminal.join", session_tag=tag)
    assert {row["detail"]["mode"] for row in joins} == {"peer", "observer"}
    assert len({row["worker"] for row in joins}) == 2  # each worker recorded its own viewer


async def test_the_observer_never_changes_the_size(demo: dict[str, Any], viewer: Open) -> None:
    script = "stty -echo; read x; stty size; read y"
    async with viewer(0) as peer, viewer(1) as watcher:
        tag = str((await peer.start(cmd="/bin/sh", args=["-c", script], **SIZE))["tag"])
        await watcher.send(type="connect", tag=tag, mode="observer")
        await watcher.send(type="resize", cols=20, rows=5)
        assert (await watcher.expect("error"))["data"] == modes.RESIZE_REFUSED
        await peer.type("\n")
        await peer.read_until(b"30 100")


async def test_an_observe_scoped_key_cannot_become_a_peer(
    cluster: Stack, demo: dict[str, Any], viewer: Open
) -> None:
    raw = observe_key(cluster, demo)
    headers = [("X-API-Key", raw)]
    async with viewer(0) as peer:
        tag = await start_echo(peer)
        async with viewer(1, headers) as asks:
            await asks.send(type="connect", tag=tag, mode="peer")
            assert await asks.recv() == {"type": "error", "data": modes.OBSERVE_KEY_PEER, "fatal": True}
        async with viewer(1, headers) as starts:
            await starts.send(type="start")
            assert await starts.recv() == {"type": "error", "data": modes.OBSERVE_KEY_START, "fatal": True}
        async with viewer(1, headers) as watcher:
            await watcher.send(type="connect", tag=tag)
            await watcher.type("typed\n")
            assert (await watcher.expect("error"))["data"] == modes.INPUT_REFUSED
            await peer.type("shown\n")
            await watcher.read_until(b"got:shown")
    refused = audit_rows(cluster, action="terminal.join", outcome="failure", session_tag=tag)
    assert [(row["actor_label"], row["reason"]) for row in refused] == [
        (f"key:{raw[:12]}", modes.OBSERVE_KEY_PEER)
    ]


async def test_presence_frames_on_join_and_leave_across_workers(viewer: Open) -> None:
    async with viewer(0) as peer:
        tag = await start_echo(peer)
        mine = (await peer.roster(lambda viewers: len(viewers) == 1))["you"]
        async with viewer(1) as watcher:
            await watcher.send(type="connect", tag=tag, mode="observer")
            seen_by_peer = await peer.roster(lambda viewers: len(viewers) == 2)
            seen_by_watcher = await watcher.roster(lambda viewers: len(viewers) == 2)
            assert seen_by_peer["viewers"] == seen_by_watcher["viewers"]
            assert {v["mode"] for v in seen_by_peer["viewers"]} == {"peer", "observer"}
            assert seen_by_watcher["you"] != mine
        await peer.roster(lambda viewers: [v["id"] for v in viewers] == [mine])


async def test_a_peer_hands_control_to_an_observer_on_another_worker(
    cluster: Stack, demo: dict[str, Any], viewer: Open
) -> None:
    access = access_token(cluster, demo["username"], demo["password"])
    async with viewer(0) as peer, viewer(1, [("Authorization", f"Bearer {access}")]) as person:
        tag = await start_echo(peer)
        await person.send(type="connect", tag=tag, mode="observer")
        frame = await peer.roster(lambda viewers: len(viewers) == 2)
        target = next(v for v in frame["viewers"] if v["id"] != frame["you"])
        await person.type("before\n")
        assert (await person.expect("error"))["data"] == modes.INPUT_REFUSED
        await peer.send(type="control", viewer=target["id"], mode="peer")
        await person.roster(lambda viewers: all(v["mode"] == "peer" for v in viewers))
        await person.type("handed\n")
        await peer.read_until(b"got:handed")
        assert b"got:before" not in peer.output
    (handed,) = audit_rows(cluster, action="terminal.control", session_tag=tag)
    assert (handed["actor_label"], handed["outcome"]) == (f"key:{demo['api_key'][:12]}", "success")
    assert handed["detail"] == {
        "viewer": target["id"],
        "target": f"user:{demo['username']}",
        "mode": "peer",
        "how": "handed",
    }


async def test_a_share_link_watches_and_its_revocation_closes_the_viewer(
    cluster: Stack, demo: dict[str, Any], viewer: Open
) -> None:
    # The guest's worker checks credentials only every 10 minutes: what closes it is the
    # revocation, published by the worker that served the DELETE, through Redis.
    env = cluster.env
    cluster.env = {**env, "WRENN_PTY_CREDENTIAL_CHECK_SECONDS": "600"}
    try:
        patient = cluster.start_worker()
    finally:
        cluster.env = env
    async with viewer(0) as peer:
        tag = await start_echo(peer)
        link = share(cluster, demo, tag, mode="observer", expires_in=600)
        async with viewer(patient, []) as guest:
            await guest.send(type="auth", token=link["token"])
            await guest.send(type="connect", tag=tag, offset=0)
            await peer.type("for-the-guest\n")
            await guest.read_until(b"got:for-the-guest")
            frame = await peer.roster(lambda viewers: any(v["link"] for v in viewers))
            assert next(v for v in frame["viewers"] if v["link"])["label"] == f"share:{link['id']}"
            revoke(cluster, demo, tag, link["id"])
            revoked = f"authentication revoked: {share_links.REVOKED}"
            assert await guest.expect("error") == {"type": "error", "data": revoked, "fatal": True}
        await peer.roster(lambda viewers: len(viewers) == 1)
        async with viewer(1, []) as late:
            await late.send(type="auth", token=link["token"])
            refused = f"authentication failed: {share_links.REVOKED}"
            assert await late.recv() == {"type": "error", "data": refused, "fatal": True}
    # The guest's worker writes its leave as the socket ends; the test may get here first.
    await wait_until(lambda: bool(audit_rows(cluster, share_id=link["id"], action="terminal.leave")))
    actions = [(row["action"], row["outcome"]) for row in audit_rows(cluster, share_id=link["id"])]
    assert ("terminal.join", "success") in actions
    assert ("terminal.leave", "success") in actions
    assert ("auth.failed", "failure") in actions


async def test_a_share_link_expires_under_an_open_viewer(
    cluster: Stack, demo: dict[str, Any], viewer: Open
) -> None:
    async with viewer(0) as peer:
        tag = await start_echo(peer)
        link = share(cluster, demo, tag, expires_in=60)
        async with viewer(1, [("Authorization", f"Bearer {link['token']}")]) as guest:
            await guest.send(type="connect", tag=tag)
            await peer.roster(lambda viewers: len(viewers) == 2)
            shell(
                cluster,
                f"""
                from django.utils import timezone
                from shares.models import ShareLink
                ShareLink.objects.filter(pk="{link["id"]}").update(expires_at=timezone.now())
                """,
            )
            expired = f"authentication revoked: {share_links.EXPIRED}"
            assert await guest.expect("error") == {"type": "error", "data": expired, "fatal": True}


async def test_staff_on_the_admin_route_observe_until_they_take_control(
    cluster: Stack, demo: dict[str, Any], viewer: Open
) -> None:
    shell(
        cluster,
        """
        from django.contrib.auth import get_user_model
        from capsules.models import Membership, Team
        user = get_user_model().objects.create_user("ops", password="ops-password-1", is_staff=True)
        Membership.objects.create(user=user, team=Team.objects.create(name="Ops", slug="ops"))
        """,
    )
    access = access_token(cluster, "ops", "ops-password-1")
    async with viewer(0) as peer:
        tag = await start_echo(peer)
        async with viewer(1, [("Authorization", f"Bearer {access}")], "/v1/admin/capsules") as ops:
            await ops.send(type="connect", tag=tag)
            await ops.type("nope\n")
            assert (await ops.expect("error"))["data"] == modes.INPUT_REFUSED
            assert audit_rows(cluster, action="terminal.control", session_tag=tag) == []
            await ops.send(type="control", mode="peer")
            await ops.roster(lambda viewers: all(v["mode"] == "peer" for v in viewers))
            await ops.type("ops\n")
            await peer.read_until(b"got:ops")
    (taken,) = audit_rows(cluster, action="terminal.control", session_tag=tag)
    assert (taken["actor_label"], taken["outcome"], taken["detail"]["how"]) == (
        "user:ops",
        "success",
        "taken",
    )


async def test_a_dead_workers_viewers_leave_the_roster(cluster: Stack, viewer: Open) -> None:
    doomed = cluster.start_worker()
    async with viewer(0) as peer:
        tag = await start_echo(peer)
        watcher_cm = viewer(doomed)
        watcher = await watcher_cm.__aenter__()
        try:
            await watcher.send(type="connect", tag=tag, mode="observer")
            await peer.roster(lambda viewers: len(viewers) == 2)
            cluster.workers[doomed][1].send_signal(signal.SIGKILL)
            # No leave is ever said; the entry's deadline passes, and the peer's worker sweeps it.
            await peer.roster(lambda viewers: len(viewers) == 1, timeout=ROSTER_TTL * 10)
        finally:
            await asyncio.gather(watcher_cm.__aexit__(None, None, None), return_exceptions=True)
    await wait_until(lambda: cluster.workers[doomed][1].poll() is not None)
