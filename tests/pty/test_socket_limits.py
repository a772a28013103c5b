"""A terminal socket follows its credentials, and a capsule's sessions are capped (real ASGI
application, in-memory channel layer, real host agent)."""

from __future__ import annotations

from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.utils import timezone

from capsules.models import APIKey, Membership, Sandbox, Team, TerminalSession
from tests.pty.test_consumer import _access_token, assert_no_sessions, bearer, path, terminal
from tests.support.terminal import Terminal

pytestmark = [pytest.mark.timeout(60)]

SHELL = ["-c", "stty -echo; read x; echo got-$x; read y"]


async def expect_revoked(term: Terminal, reason: str) -> None:
    frame = await term.expect("error")
    assert frame == {"type": "error", "data": f"authentication revoked: {reason}", "fatal": True}
    assert (await term.communicator.receive_output(timeout=10))["type"] == "websocket.close"


async def test_a_revoked_api_key_closes_its_open_terminal(
    open_socket: Any, capsule: Sandbox, api_key: str, settings: Any
) -> None:
    settings.PTY_CREDENTIAL_CHECK_SECONDS = 0.2
    term = await terminal(open_socket, capsule, api_key)
    await term.start(cmd="/bin/sh", args=SHELL)
    await term.type("before\n")
    await term.read_until(b"got-before")
    await database_sync_to_async(APIKey.objects.filter(team=capsule.team).update)(revoked_at=timezone.now())
    await expect_revoked(term, "the API key was revoked")


async def token_terminal(open_socket: Any, capsule: Sandbox, member: Any, team: Team) -> Terminal:
    """A shell started on a socket opened with the member's access token."""
    access = await _access_token(member, team)
    term = Terminal.over_communicator(await open_socket(path(capsule), bearer(access)))
    await term.start(cmd="/bin/sh", args=SHELL)
    return term


async def test_a_deactivated_user_loses_the_terminal_opened_with_their_token(
    open_socket: Any, capsule: Sandbox, member: Any, team: Team, settings: Any
) -> None:
    settings.PTY_CREDENTIAL_CHECK_SECONDS = 0.2
    term = await token_terminal(open_socket, capsule, member, team)
    member.is_active = False
    await database_sync_to_async(member.save)()
    await expect_revoked(term, "the user was deactivated")


async def test_leaving_the_team_closes_the_terminal(
    open_socket: Any, capsule: Sandbox, member: Any, team: Team, settings: Any
) -> None:
    settings.PTY_CREDENTIAL_CHECK_SECONDS = 0.2
    term = await token_terminal(open_socket, capsule, member, team)
    await database_sync_to_async(Membership.objects.filter(user=member, team=team).delete)()
    await expect_revoked(term, "the user is no longer a member of the team")


async def test_credentials_that_hold_keep_the_terminal(
    open_socket: Any, capsule: Sandbox, api_key: str, settings: Any
) -> None:
    settings.PTY_CREDENTIAL_CHECK_SECONDS = 0.05
    term = await terminal(open_socket, capsule, api_key)
    await term.start(cmd="/bin/sh", args=["-c", "stty -echo; for i in 1 2 3; do read x; echo got-$x; done"])
    for word in ("one", "two", "three"):  # many checks pass meanwhile
        await term.type(f"{word}\n")
        await term.read_until(f"got-{word}".encode())


def open_rows(capsule: Sandbox) -> int:
    return TerminalSession.objects.filter(sandbox=capsule, ended_at__isnull=True).count()


async def test_sessions_per_capsule_are_capped_and_outlive_their_sockets(
    open_socket: Any, capsule: Sandbox, api_key: str, settings: Any
) -> None:
    settings.PTY_MAX_SESSIONS_PER_CAPSULE = 2
    tags = []
    for _ in range(2):  # started, then the client goes away before any input
        term = await terminal(open_socket, capsule, api_key)
        tags.append((await term.start(cmd="/bin/sh", args=SHELL))["tag"])
        await term.communicator.disconnect()
    assert await database_sync_to_async(open_rows)(capsule) == 2  # they run on, and count
    refused = await terminal(open_socket, capsule, api_key)
    await refused.send(type="start", cmd="/bin/sh")
    assert await refused.recv() == {
        "type": "error",
        "data": (
            "too many terminal sessions: this capsule has 2 (at most 2); kill one or wait for one to exit"
        ),
        "fatal": True,
    }
    # Killing one (here through its own socket) makes room.
    first = await terminal(open_socket, capsule, api_key)
    await first.send(type="connect", tag=tags[0])
    await first.send(type="kill")
    assert (await first.expect("exit"))["exit_code"] == 137
    again = await terminal(open_socket, capsule, api_key)
    await again.start(cmd="/bin/echo", args=["room-again"])
    await again.read_until(b"room-again")
    last = await terminal(open_socket, capsule, api_key)
    await last.send(type="connect", tag=tags[1])
    await last.send(type="kill")
    await last.expect("exit")
    await again.expect("exit")


async def test_a_start_the_agent_refuses_frees_its_place(
    open_socket: Any, capsule: Sandbox, api_key: str, settings: Any
) -> None:
    settings.PTY_MAX_SESSIONS_PER_CAPSULE = 1
    for _ in range(3):
        term = await terminal(open_socket, capsule, api_key)
        await term.send(type="start", cmd="/no/such/binary")
        frame = await term.expect("error")
        assert frame["data"].startswith("failed to start pty: ")
    assert await database_sync_to_async(open_rows)(capsule) == 0
    await assert_no_sessions(capsule)


async def test_connecting_to_sessions_that_do_not_exist_takes_no_place(
    open_socket: Any, capsule: Sandbox, api_key: str, settings: Any
) -> None:
    settings.PTY_MAX_SESSIONS_PER_CAPSULE = 1
    for number in range(3):
        term = await terminal(open_socket, capsule, api_key)
        await term.send(type="connect", tag=f"pty-0000000{number}")
        frame = await term.expect("error")
        assert frame == {"type": "error", "data": f"pty session pty-0000000{number} not found", "fatal": True}
    assert await database_sync_to_async(open_rows)(capsule) == 0
    term = await terminal(open_socket, capsule, api_key)
    await term.start(cmd="/bin/echo", args=["still-room"])
    await term.read_until(b"still-room")
