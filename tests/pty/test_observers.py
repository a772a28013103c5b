"""Observers, share links, the roster of viewers and the audit trail of terminal sockets, through
the real ASGI application, the in-memory channel layer and a real host agent."""

from __future__ import annotations

import base64
from datetime import timedelta
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model
from django.utils import timezone

from audit import trail
from audit.models import AuditEvent
from capsules.keys import create_api_key
from capsules.models import APIKey, Membership, Sandbox, Team
from pty import modes
from shares import links as share_links
from shares.models import ShareLink
from tests.pty.test_consumer import _access_token, assert_closed_and_clean, bearer, key_header, path
from tests.support.polling import wait_until
from tests.support.terminal import Terminal

pytestmark = [pytest.mark.timeout(90)]

# A session that prints whatever it reads, so a test sees what reached it.
ECHO = ["-c", "stty -echo; echo READY; while read line; do echo got:$line; done"]


async def observe_key(team: Team) -> str:
    key, raw = await database_sync_to_async(create_api_key)(team, "watcher")
    key.scope = APIKey.Scope.TERMINAL_OBSERVE
    await key.asave()
    return raw


async def issue_share(capsule: Sandbox, tag: str, seconds: int = 600) -> tuple[ShareLink, str]:
    @database_sync_to_async
    def issue() -> share_links.Issued:
        sandbox = Sandbox.objects.get(pk=capsule.pk)
        return share_links.issue(sandbox, tag, seconds, trail.SYSTEM, trail.Where())

    issued = await issue()
    return issued.link, issued.token


async def peer_session(open_socket: Any, capsule: Sandbox, api_key: str) -> tuple[Terminal, str]:
    peer = Terminal.over_communicator(await open_socket(path(capsule), key_header(api_key)))
    tag = (await peer.start(cmd="/bin/sh", args=ECHO))["tag"]
    await peer.read_until(b"READY")
    return peer, tag


async def share_socket(open_socket: Any, capsule: Sandbox, token: str) -> Terminal:
    term = Terminal.over_communicator(await open_socket(path(capsule)))
    await term.send(type="auth", token=token)
    return term


async def events(**filters: Any) -> list[AuditEvent]:
    return [event async for event in AuditEvent.objects.filter(**filters).order_by("id")]


# --- observers ----------------------------------------------------------------------------------


async def test_an_observer_gets_every_byte_and_cannot_type_resize_or_kill(
    open_socket: Any, capsule: Sandbox, api_key: str
) -> None:
    peer, tag = await peer_session(open_socket, capsule, api_key)
    watcher = Terminal.over_communicator(await open_socket(path(capsule), key_header(api_key)))
    await watcher.send(type="connect", tag=tag, mode="observer", offset=0)
    await watcher.read_until(b"READY")
    for frame, refusal in (
        ({"type": "input", "data": base64.b64encode(b"sneaky\n").decode()}, modes.INPUT_REFUSED),
        ({"type": "resize", "cols": 20, "rows": 5}, modes.RESIZE_REFUSED),
        ({"type": "kill"}, modes.KILL_REFUSED),
    ):
        await watcher.send(**frame)
        assert await watcher.expect("error") == {"type": "error", "data": refusal, "fatal": False}
    # The socket goes on, and the session heard none of it: the peer's input arrives, alone.
    await peer.type("hello\n")
    await watcher.read_until(b"got:hello")
    await peer.read_until(b"got:hello")
    assert b"sneaky" not in watcher.output
    assert bytes(watcher.output) == bytes(peer.output)
    kill = await events(action="terminal.kill")
    assert [(e.outcome, e.reason, e.session_tag) for e in kill] == [("failure", modes.KILL_REFUSED, tag)]


async def test_an_observe_scoped_key_observes_and_cannot_become_a_peer(
    open_socket: Any, capsule: Sandbox, team: Team, api_key: str
) -> None:
    _peer, tag = await peer_session(open_socket, capsule, api_key)
    raw = await observe_key(team)
    asks_peer = Terminal.over_communicator(await open_socket(path(capsule), key_header(raw)))
    await asks_peer.send(type="connect", tag=tag, mode="peer")
    assert await asks_peer.recv() == {"type": "error", "data": modes.OBSERVE_KEY_PEER, "fatal": True}
    starts = Terminal.over_communicator(await open_socket(path(capsule), key_header(raw)))
    await starts.send(type="start", cmd="/bin/true")
    assert await starts.recv() == {"type": "error", "data": modes.OBSERVE_KEY_START, "fatal": True}
    # Without a mode it observes; its control frame cannot make it a peer either.
    watcher = Terminal.over_communicator(await open_socket(path(capsule), key_header(raw)))
    await watcher.send(type="connect", tag=tag)
    frame = await watcher.roster(lambda viewers: len(viewers) == 2)
    me = next(v for v in frame["viewers"] if v["id"] == frame["you"])
    assert (me["mode"], me["may_control"], me["label"]) == ("observer", False, f"key:{raw[:12]}")
    await watcher.send(type="control", mode="peer")
    refused = f"control refused: {modes.OBSERVE_KEY_PEER}"
    assert await watcher.expect("error") == {"type": "error", "data": refused, "fatal": False}
    await watcher.type("x\n")
    assert (await watcher.expect("error"))["data"] == modes.INPUT_REFUSED
    joins = await events(action="terminal.join", outcome="failure")
    assert [(e.reason, e.actor_label) for e in joins] == [(modes.OBSERVE_KEY_PEER, f"key:{raw[:12]}")]
    starts_refused = await events(action="terminal.start", outcome="failure")
    assert [e.reason for e in starts_refused] == [modes.OBSERVE_KEY_START]


async def test_the_roster_follows_joins_and_leaves(open_socket: Any, capsule: Sandbox, api_key: str) -> None:
    peer, tag = await peer_session(open_socket, capsule, api_key)
    first = await peer.roster(lambda viewers: len(viewers) == 1)
    assert [(v["mode"], v["label"]) for v in first["viewers"]] == [("peer", f"key:{api_key[:12]}")]
    assert set(first["viewers"][0]) == {"id", "label", "mode", "since", "link", "may_control"}
    communicator = await open_socket(path(capsule), key_header(api_key))
    watcher = Terminal.over_communicator(communicator)
    await watcher.send(type="connect", tag=tag, mode="observer")
    both = await peer.roster(lambda viewers: len(viewers) == 2)
    modes_seen = sorted(v["mode"] for v in both["viewers"])
    assert modes_seen == ["observer", "peer"]
    await communicator.disconnect(timeout=10)
    await peer.roster(lambda viewers: [v["id"] for v in viewers] == [first["you"]])


async def test_a_reference_client_never_sees_a_viewers_frame(
    open_socket: Any, capsule: Sandbox, api_key: str
) -> None:
    peer, tag = await peer_session(open_socket, capsule, api_key)
    reference = Terminal.over_communicator(
        await open_socket(path(capsule), key_header(api_key), subprotocols=[])
    )
    await reference.send(type="connect", tag=tag)
    await reference.type("ping\n")
    await reference.read_until(b"got:ping")
    await peer.roster(lambda viewers: len(viewers) == 2)
    assert "viewers" not in reference.kinds


async def test_a_peer_hands_control_to_an_observer(
    open_socket: Any, capsule: Sandbox, team: Team, member: Any, api_key: str
) -> None:
    peer, tag = await peer_session(open_socket, capsule, api_key)
    access = await _access_token(member, team)
    watcher = Terminal.over_communicator(await open_socket(path(capsule), bearer(access)))
    await watcher.send(type="connect", tag=tag, mode="observer")
    frame = await peer.roster(lambda viewers: len(viewers) == 2)
    target = next(v for v in frame["viewers"] if v["id"] != frame["you"])
    assert (target["mode"], target["may_control"]) == ("observer", True)
    await peer.send(type="control", viewer=target["id"], mode="peer")
    await watcher.roster(lambda viewers: all(v["mode"] == "peer" for v in viewers))
    await watcher.type("from-alice\n")
    await peer.read_until(b"got:from-alice")
    # Handing it to a viewer that may only observe is refused, with who it is.
    link, token = await issue_share(capsule, tag)
    shared = await share_socket(open_socket, capsule, token)
    await shared.send(type="connect", tag=tag, mode="observer")
    frame = await peer.roster(lambda viewers: len(viewers) == 3)
    guest = next(v for v in frame["viewers"] if v["link"])
    await peer.send(type="control", viewer=guest["id"], mode="peer")
    refused = modes.only_observes(guest["id"], f"share:{link.pk}")
    assert await peer.expect("error") == {"type": "error", "data": refused, "fatal": False}
    # An observer cannot hand anything over.
    await shared.send(type="control", viewer=frame["you"], mode="observer")
    assert (await shared.expect("error"))["data"] == modes.NOT_PEER_CONTROL
    handed = await events(action="terminal.control", outcome="success")
    assert [(e.actor_label, e.detail["target"], e.detail["how"]) for e in handed] == [
        (f"key:{api_key[:12]}", "user:alice", "handed")
    ]


async def test_a_peer_revokes_a_guests_link_and_closes_it(
    open_socket: Any, capsule: Sandbox, api_key: str
) -> None:
    peer, tag = await peer_session(open_socket, capsule, api_key)
    link, token = await issue_share(capsule, tag)
    guest = await share_socket(open_socket, capsule, token)
    await guest.send(type="connect", tag=tag)
    frame = await peer.roster(lambda viewers: len(viewers) == 2)
    target = next(v for v in frame["viewers"] if v["link"])
    assert target["mode"] == "observer"
    await peer.send(type="revoke", viewer=frame["you"])
    assert (await peer.expect("error"))["data"] == modes.no_link(frame["you"])
    await peer.send(type="revoke", viewer=target["id"])
    revoked = f"authentication revoked: {share_links.REVOKED}"
    assert await guest.expect("error") == {"type": "error", "data": revoked, "fatal": True}
    await peer.roster(lambda viewers: len(viewers) == 1)
    await link.arefresh_from_db()
    assert link.revoked_at is not None
    (event,) = await events(action="share.revoke")
    assert (event.actor_label, event.detail["how"]) == (f"key:{api_key[:12]}", "control frame")


# --- share links ----------------------------------------------------------------------------------


async def test_a_share_link_watches_its_session_and_nothing_else(
    open_socket: Any, capsule: Sandbox, other_capsule: Sandbox, api_key: str
) -> None:
    peer, tag = await peer_session(open_socket, capsule, api_key)
    link, token = await issue_share(capsule, tag)
    guest = await share_socket(open_socket, capsule, token)
    await guest.send(type="connect", tag=tag, offset=0)
    await guest.read_until(b"READY")
    await peer.type("shown\n")
    await guest.read_until(b"got:shown")
    await guest.type("typed\n")
    assert (await guest.expect("error"))["data"] == modes.INPUT_REFUSED

    refusals = [
        ({"type": "start"}, modes.SHARE_START),
        ({"type": "connect", "tag": "pty-0badc0de"}, modes.share_session(tag)),
        ({"type": "connect", "tag": tag, "mode": "peer"}, modes.SHARE_PEER),
    ]
    for frame, message in refusals:
        term = await share_socket(open_socket, capsule, token)
        await term.send(**frame)
        assert await term.recv() == {"type": "error", "data": message, "fatal": True}
    # Another capsule (of another team, or of its own) is not granted.
    term = await share_socket(open_socket, other_capsule, token)
    assert await term.recv() == {"type": "error", "data": modes.SHARE_CAPSULE, "fatal": True}
    # Nor the admin route.
    admin = Terminal.over_communicator(await open_socket(f"/v1/admin/capsules/{capsule.id}/pty"))
    await admin.send(type="auth", token=token)
    assert (await admin.recv())["data"] == "the admin terminal requires a staff account"
    # In a header it is the same link.
    header = Terminal.over_communicator(await open_socket(path(capsule), bearer(token)))
    await header.send(type="connect", tag=tag, offset=0)
    await header.read_until(b"got:shown")
    failures = await events(outcome="failure", actor_type="share")
    assert {(e.action, e.reason) for e in failures} >= {
        ("terminal.start", modes.SHARE_START),
        ("terminal.join", modes.share_session(tag)),
        ("terminal.join", modes.SHARE_PEER),
        ("auth.failed", modes.SHARE_CAPSULE),
    }
    assert all(e.share_id == link.pk for e in failures)


async def test_a_tampered_expired_or_revoked_link_is_refused(
    open_socket: Any, capsule: Sandbox, api_key: str
) -> None:
    _peer, tag = await peer_session(open_socket, capsule, api_key)
    link, token = await issue_share(capsule, tag)
    tampered = token[:-1] + ("A" if token[-1] != "A" else "B")
    for bad, message in (
        (tampered, "authentication failed: invalid share link"),
        ("wrs_short", "authentication failed: invalid share link"),
    ):
        term = await share_socket(open_socket, capsule, bad)
        assert await term.recv() == {"type": "error", "data": message, "fatal": True}
    await ShareLink.objects.filter(pk=link.pk).aupdate(expires_at=timezone.now() - timedelta(seconds=1))
    term = await share_socket(open_socket, capsule, token)
    expired = f"authentication failed: {share_links.EXPIRED}"
    assert await term.recv() == {"type": "error", "data": expired, "fatal": True}
    await ShareLink.objects.filter(pk=link.pk).aupdate(
        expires_at=timezone.now() + timedelta(hours=1), revoked_at=timezone.now()
    )
    term = await share_socket(open_socket, capsule, token)
    revoked = f"authentication failed: {share_links.REVOKED}"
    assert await term.recv() == {"type": "error", "data": revoked, "fatal": True}
    failed = await events(action="auth.failed")
    assert [(e.actor_type, e.reason) for e in failed] == [
        ("anonymous", "authentication failed: invalid share link"),
        ("anonymous", "authentication failed: invalid share link"),
        ("share", expired),
        ("share", revoked),
    ]
    assert all(e.capsule_id == capsule.id and e.outcome == "failure" for e in failed)


async def test_an_open_share_viewer_is_closed_when_its_link_expires(
    open_socket: Any, capsule: Sandbox, api_key: str, settings: Any
) -> None:
    settings.PTY_CREDENTIAL_CHECK_SECONDS = 0.2
    peer, tag = await peer_session(open_socket, capsule, api_key)
    link, token = await issue_share(capsule, tag)
    guest = await share_socket(open_socket, capsule, token)
    await guest.send(type="connect", tag=tag)
    await peer.roster(lambda viewers: len(viewers) == 2)
    await ShareLink.objects.filter(pk=link.pk).aupdate(expires_at=timezone.now())
    expired = f"authentication revoked: {share_links.EXPIRED}"
    assert await guest.expect("error") == {"type": "error", "data": expired, "fatal": True}


async def test_an_auth_frame_after_header_credentials_is_refused(
    open_socket: Any, capsule: Sandbox, api_key: str
) -> None:
    """Only the cookie, which a browser sends on its own, gives way to an auth frame (a share
    page opened by a signed-in person: tests/browser/test_share_page.py)."""
    _peer, tag = await peer_session(open_socket, capsule, api_key)
    _, token = await issue_share(capsule, tag)
    term = Terminal.over_communicator(await open_socket(path(capsule), key_header(api_key)))
    await term.send(type="auth", token=token)
    assert (await term.recv())["data"] == "first message must be type 'start' or 'connect'"


# --- staff on the admin route ---------------------------------------------------------------------


async def test_staff_observe_on_the_admin_route_until_they_take_control(
    open_socket: Any, other_capsule: Sandbox, other_team: Team, team: Team
) -> None:
    owner_key = await database_sync_to_async(create_api_key)(other_team, "owner")
    peer, tag = await peer_session(open_socket, other_capsule, owner_key[1])
    staff = await get_user_model().objects.acreate(username="ops", is_staff=True)
    await Membership.objects.acreate(user=staff, team=team)
    access = await _access_token(staff, team)
    route = f"/v1/admin/capsules/{other_capsule.id}/pty"
    ops = Terminal.over_communicator(await open_socket(route, bearer(access)))
    await ops.send(type="connect", tag=tag)
    frame = await ops.roster(lambda viewers: len(viewers) == 2)
    me = next(v for v in frame["viewers"] if v["id"] == frame["you"])
    assert (me["mode"], me["may_control"]) == ("observer", True)
    await ops.type("nope\n")
    assert (await ops.expect("error"))["data"] == modes.INPUT_REFUSED
    assert not await events(action="terminal.control")
    await ops.send(type="control", mode="peer")
    await ops.roster(lambda viewers: all(v["mode"] == "peer" for v in viewers))
    await ops.type("ops-was-here\n")
    await peer.read_until(b"got:ops-was-here")
    (event,) = await events(action="terminal.control")
    assert (event.actor_label, event.user_id, event.detail["how"]) == ("user:ops", staff.pk, "taken")
    assert (event.capsule_id, event.session_tag, event.outcome) == (other_capsule.id, tag, "success")
    # Asking for peer in the connect takes control too, and is audited the same way.
    again = Terminal.over_communicator(await open_socket(route, bearer(access)))
    await again.send(type="connect", tag=tag, mode="peer")
    await again.type("second\n")
    await peer.read_until(b"got:second")
    taken = await events(action="terminal.control")
    assert [e.detail["how"] for e in taken] == ["taken", "connect"]


# --- the audit trail ------------------------------------------------------------------------------


async def test_start_join_leave_and_kill_are_audited(
    open_socket: Any, capsule: Sandbox, api_key: str, team: Team
) -> None:
    peer, tag = await peer_session(open_socket, capsule, api_key)
    communicator = await open_socket(path(capsule), key_header(api_key))
    watcher = Terminal.over_communicator(communicator)
    await watcher.send(type="connect", tag=tag, mode="observer")
    await peer.roster(lambda viewers: len(viewers) == 2)
    # Joined once it has caught up with the session (its join is then in the trail).
    await wait_until(
        lambda: AuditEvent.objects.filter(action="terminal.join", detail__mode="observer").aexists()
    )
    await communicator.disconnect(timeout=10)
    await peer.roster(lambda viewers: len(viewers) == 1)
    await wait_until(lambda: AuditEvent.objects.filter(action="terminal.leave").aexists())
    await peer.send(type="kill")
    await peer.expect("exit")
    await wait_until(two_leaves)
    seen = [(e.action, e.outcome, e.detail.get("mode")) for e in await events(capsule_id=capsule.id)]
    assert seen == [
        ("terminal.start", "success", "peer"),
        ("terminal.join", "success", "peer"),
        ("terminal.join", "success", "observer"),
        ("terminal.leave", "success", "observer"),
        ("terminal.kill", "success", "peer"),
        ("terminal.leave", "success", "peer"),
    ]
    for event in await events(capsule_id=capsule.id):
        assert (event.actor_type, event.actor_label) == ("api_key", f"key:{api_key[:12]}")
        assert (event.team_id, event.session_tag) == (team.pk, tag)
        assert event.worker
    start = (await events(action="terminal.start"))[0]
    assert start.detail["command"].startswith("/bin/sh -c")


async def two_leaves() -> bool:
    return await AuditEvent.objects.filter(action="terminal.leave").acount() == 2


async def test_failed_socket_authentication_is_audited_with_its_reason(
    open_socket: Any, capsule: Sandbox
) -> None:
    term = Terminal.over_communicator(await open_socket(path(capsule), key_header("wrn_" + "0" * 40)))
    assert (await term.recv())["data"] == "authentication failed: invalid API key"
    await assert_closed_and_clean(term.communicator, capsule)
    term = Terminal.over_communicator(await open_socket(path(capsule)))
    await term.send(type="start")
    assert (await term.recv())["data"].startswith("authentication required")
    reasons = [(e.action, e.outcome, e.actor_type, e.reason) for e in await events()]
    assert reasons == [
        ("auth.failed", "failure", "anonymous", "authentication failed: invalid API key"),
        (
            "auth.failed",
            "failure",
            "anonymous",
            'authentication required: send {"type": "auth", "token": ...} first',
        ),
    ]


async def test_refused_control_and_revoke_are_audited_as_failures(
    open_socket: Any, capsule: Sandbox, api_key: str
) -> None:
    peer, tag = await peer_session(open_socket, capsule, api_key)
    link, token = await issue_share(capsule, tag)
    guest = await share_socket(open_socket, capsule, token)
    await guest.send(type="connect", tag=tag)
    frame = await peer.roster(lambda viewers: len(viewers) == 2)
    target = next(v for v in frame["viewers"] if v["link"])
    await guest.send(type="control", mode="peer")
    await guest.expect("error")
    await guest.send(type="revoke", viewer=target["id"])
    assert (await guest.expect("error"))["data"] == modes.NOT_PEER_REVOKE
    await peer.send(type="control", viewer=target["id"], mode="peer")
    await peer.expect("error")
    await peer.send(type="control", viewer="v-00000000", mode="peer")
    assert (await peer.expect("error"))["data"] == f"control refused: {modes.no_viewer('v-00000000')}"
    await peer.send(type="control", mode="peer")
    assert (await peer.expect("error"))["data"] == "control: this viewer is already a peer"
    failed = [(e.action, e.actor_label, e.reason) for e in await events(outcome="failure")]
    assert failed == [
        ("terminal.control", f"share:{link.pk}", f"control refused: {modes.SHARE_PEER}"),
        ("share.revoke", f"share:{link.pk}", modes.NOT_PEER_REVOKE),
        ("terminal.control", f"key:{api_key[:12]}", modes.only_observes(target["id"], f"share:{link.pk}")),
    ]
    await link.arefresh_from_db()
    assert link.revoked_at is None


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (
            '{"type": "connect", "tag": "pty-12345678", "mode": "boss"}',
            "invalid connect: 'mode' must be 'peer' or 'observer'",
        ),
        ('{"type": "control", "mode": "owner"}', "invalid control: 'mode' must be 'peer' or 'observer'"),
        (
            '{"type": "control", "mode": "peer", "viewer": 7}',
            "invalid control: 'viewer' must be a viewer's id (a string)",
        ),
        ('{"type": "revoke"}', "invalid revoke: 'viewer' must be a viewer's id (a string)"),
        ('{"type": "revoke", "viewer": ""}', "invalid revoke: 'viewer' must be a viewer's id (a string)"),
    ],
)
async def test_bad_mode_frames_get_their_own_error(
    open_socket: Any, capsule: Sandbox, api_key: str, frame: str, message: str
) -> None:
    peer, _tag = await peer_session(open_socket, capsule, api_key)
    await peer.communicator.send_to(text_data=frame)
    assert await peer.expect("error") == {"type": "error", "data": message, "fatal": False}
    await peer.type("still-here\n")
    await peer.read_until(b"got:still-here")


async def test_a_join_of_a_missing_session_and_an_auth_timeout_are_audited_failures(
    open_socket: Any, capsule: Sandbox, api_key: str, settings: Any
) -> None:
    term = Terminal.over_communicator(await open_socket(path(capsule), key_header(api_key)))
    await term.send(type="connect", tag="pty-0badc0de", mode="observer")
    assert (await term.recv())["data"] == "pty session pty-0badc0de not found"
    settings.PTY_AUTH_TIMEOUT_SECONDS = 0.2
    silent = Terminal.over_communicator(await open_socket(path(capsule)))
    timed_out = "authentication timed out: no credentials within 0.2 seconds"
    assert (await silent.recv())["data"] == timed_out
    failed = [(e.action, e.actor_type, e.session_tag, e.reason) for e in await events(outcome="failure")]
    assert failed == [
        ("terminal.join", "api_key", "pty-0badc0de", "pty session pty-0badc0de not found"),
        ("auth.failed", "anonymous", "", timed_out),
    ]
    assert not await events(outcome="success", action="terminal.join")


async def test_repeated_refusals_are_answered_each_time_and_recorded_once(
    open_socket: Any, capsule: Sandbox, api_key: str
) -> None:
    """A share link's holder cannot grow the audit trail by repeating a refused frame."""
    _peer, tag = await peer_session(open_socket, capsule, api_key)
    _, token = await issue_share(capsule, tag)
    guest = await share_socket(open_socket, capsule, token)
    await guest.send(type="connect", tag=tag)
    for _ in range(5):
        await guest.send(type="kill")
        assert (await guest.expect("error"))["data"] == modes.KILL_REFUSED
        await guest.send(type="control", mode="peer")
        assert (await guest.expect("error"))["data"] == f"control refused: {modes.SHARE_PEER}"
    failed = [(e.action, e.reason) for e in await events(outcome="failure")]
    assert failed == [
        ("terminal.kill", modes.KILL_REFUSED),
        ("terminal.control", f"control refused: {modes.SHARE_PEER}"),
    ]
