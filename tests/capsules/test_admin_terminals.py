"""The admin's list of terminal sessions across capsules and its kill action, on the session's real
host agent: live sessions are shown and filtered, and killing one asks its agent to kill the PTY."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse

from audit.models import AuditEvent
from capsules.actions import (
    ActionError,
    create_capsule,
    destroy_capsule,
    record_terminal_exit,
    record_terminal_started,
)
from capsules.models import Host, Sandbox, Team, TerminalSession
from protos import hostagent_pb2 as pb
from protos import hostagent_pb2_grpc as pb_grpc
from pty.roster import Entry, local_store, roster_key
from pty.stream import group_name
from recordings.models import Recording
from tests.support.hostagent import HostAgentProcess, new_tag

CHANGELIST = reverse("admin:capsules_terminalsession_changelist")


@pytest.fixture
def live_capsule(team: Team, agent_host: Host) -> Iterator[Sandbox]:
    capsule = create_capsule(team)
    yield capsule
    with contextlib.suppress(ActionError):
        destroy_capsule(capsule)


@pytest.fixture
def stub(agent: HostAgentProcess) -> Iterator[Any]:
    with grpc.insecure_channel(agent.address) as channel:
        yield pb_grpc.HostAgentStub(channel)


@pytest.fixture
def sleeping(live_capsule: Sandbox, stub: Any) -> Iterator[tuple[TerminalSession, Any]]:
    """`sleep 600` in the live capsule, recorded as the consumer records a start; and its stream."""
    tag = new_tag()
    request = pb.PtyAttachRequest(sandbox_id=live_capsule.pk, tag=tag, cmd="/bin/sleep", args=["600"])
    stream = stub.PtyAttach(request)
    event = next(stream)
    assert event.WhichOneof("event") == "started"
    record_terminal_started(live_capsule.pk, tag, "user:alice", "/bin/sleep 600", event.started.pid)
    yield TerminalSession.objects.get(sandbox=live_capsule, tag=tag), stream
    stream.cancel()


def kill(client: Client, *rows: TerminalSession) -> Any:
    data = {"action": "kill", "_selected_action": [row.pk for row in rows]}
    return client.post(CHANGELIST, data, follow=True)


def shown(response: Any) -> list[tuple[str, str]]:
    return [(message.level_tag, str(message)) for message in response.context["messages"]]


def test_the_list_shows_live_and_ended_sessions(
    admin_client: Client, sleeping: Any, live_capsule: Sandbox
) -> None:
    row, _ = sleeping
    record_terminal_started(live_capsule.pk, "pty-0000000e", "key:wrn_ab12cd34", "/bin/true", 7)
    record_terminal_exit(live_capsule.pk, "pty-0000000e", 0)
    everything = admin_client.get(CHANGELIST).content.decode()
    assert row.tag in everything
    assert "exited with code 0" in everything
    live = admin_client.get(CHANGELIST, {"live": "yes"}).content.decode()
    assert row.tag in live
    assert "pty-0000000e" not in live
    ended = admin_client.get(CHANGELIST, {"live": "no"}).content.decode()
    assert "pty-0000000e" in ended
    assert row.tag not in ended


def test_kill_asks_the_agent_to_kill_the_pty(
    admin_client: Client, sleeping: Any, live_capsule: Sandbox
) -> None:
    row, stream = sleeping
    response = kill(admin_client, row)
    assert shown(response) == [("success", f"{live_capsule.pk}/{row.tag}: killed")]
    events = [event.WhichOneof("event") for event in stream]
    assert events[-1] == "exited"


def test_kill_of_a_session_its_host_no_longer_has_closes_the_row(
    admin_client: Client, live_capsule: Sandbox
) -> None:
    record_terminal_started(live_capsule.pk, "pty-0000000f", "user:alice", "/bin/bash", 9)
    row = TerminalSession.objects.get(tag="pty-0000000f")
    response = kill(admin_client, row)
    assert shown(response) == [
        ("warning", f"{live_capsule.pk}/pty-0000000f: no longer on its host; marked ended")
    ]
    row.refresh_from_db()
    assert row.ended_at is not None


def test_kill_of_an_ended_session_says_so(admin_client: Client, live_capsule: Sandbox) -> None:
    record_terminal_started(live_capsule.pk, "pty-00000010", "user:alice", "/bin/bash", 9)
    record_terminal_exit(live_capsule.pk, "pty-00000010", 1)
    response = kill(admin_client, TerminalSession.objects.get(tag="pty-00000010"))
    assert shown(response) == [("info", f"{live_capsule.pk}/pty-00000010: already ended")]


def test_kill_reports_a_host_that_does_not_answer(admin_client: Client, team: Team, dead_host: Host) -> None:
    stranded = Sandbox.objects.create(team=team, host=dead_host, status=Sandbox.Status.RUNNING)
    record_terminal_started(stranded.pk, "pty-00000011", "user:alice", "/bin/bash", 9)
    row = TerminalSession.objects.get(tag="pty-00000011")
    response = kill(admin_client, row)
    assert shown(response) == [("error", f"{stranded.pk}/pty-00000011: sandbox host is not reachable")]
    row.refresh_from_db()
    assert row.ended_at is None


def test_kill_needs_the_change_permission_of_capsules(
    sleeping: Any, live_capsule: Sandbox, stub: Any
) -> None:
    row, _ = sleeping
    viewer = get_user_model().objects.create_user(username="viewer", password="x", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_terminalsession"))
    client = Client()
    client.force_login(viewer)
    page = client.get(CHANGELIST)
    assert page.status_code == 200
    assert 'value="kill"' not in page.content.decode()
    kill(client, row)
    listing = stub.ListPtySessions(pb.ListPtySessionsRequest(sandbox_id=live_capsule.pk), timeout=10)
    assert [(s.tag, s.exited) for s in listing.sessions] == [(row.tag, False)]


def test_rows_are_not_added_changed_or_deleted_by_hand(admin_client: Client, sleeping: Any) -> None:
    row, _ = sleeping
    assert admin_client.get(reverse("admin:capsules_terminalsession_add")).status_code == 403
    assert (
        admin_client.get(reverse("admin:capsules_terminalsession_delete", args=[row.pk])).status_code == 403
    )
    page = admin_client.get(reverse("admin:capsules_terminalsession_change", args=[row.pk]))
    assert page.status_code == 200  # shown, read-only
    assert 'name="_save"' not in page.content.decode()


def test_the_list_shows_who_watches_a_live_session(
    admin_client: Client, sleeping: Any, live_capsule: Sandbox
) -> None:
    row, _ = sleeping
    key = roster_key(group_name(live_capsule.pk, row.tag))
    later, earlier = time.time() + 60, time.time() - 1
    entries = [
        Entry("v-1", "user:alice", "peer", "2026-01-01T00:00:00+00:00", "c1", "", True, later),
        Entry("v-2", "share:shr-1", "observer", "2026-01-01T00:00:01+00:00", "c2", "shr-1", False, later),
        # Its worker stopped renewing it: not shown.
        Entry("v-3", "user:gone", "peer", "2026-01-01T00:00:02+00:00", "c3", "", True, earlier),
    ]
    for entry in entries:
        local_store._rosters.setdefault(key, {})[entry.id] = entry.dumps()
    try:
        page = admin_client.get(CHANGELIST, {"live": "yes"}).content.decode()
    finally:
        async_to_sync(local_store.drop)(key)
    assert "2: user:alice (peer), share:shr-1 (observer)" in page
    assert "user:gone" not in page
    watch = reverse("capsule-terminal", args=[live_capsule.pk])
    assert f'href="{watch}?tag={row.tag}&amp;mode=observer"' in page


def test_kills_are_audited(admin_client: Client, sleeping: Any, live_capsule: Sandbox) -> None:
    row, _ = sleeping
    kill(admin_client, row)
    record_terminal_started(live_capsule.pk, "pty-0000000d", "user:alice", "/bin/bash", 9)
    kill(admin_client, TerminalSession.objects.get(tag="pty-0000000d"))
    events = list(AuditEvent.objects.filter(action="terminal.kill").order_by("id"))
    assert [(e.session_tag, e.outcome) for e in events] == [(row.tag, "success"), ("pty-0000000d", "failure")]
    assert events[1].reason == "capsule has no terminal session pty-0000000d"
    assert all(e.actor_type == "user" and e.capsule_id == live_capsule.pk for e in events)


def test_a_recorded_session_links_to_its_playback(
    admin_client: Client, sleeping: Any, live_capsule: Sandbox
) -> None:
    row, _ = sleeping
    unrecorded = TerminalSession.objects.create(sandbox=live_capsule, tag="pty-0000beef")
    # (The session's start made its recording already, unless its team records nothing.)
    Recording.objects.get_or_create(
        sandbox=live_capsule,
        tag=row.tag,
        defaults={"team": live_capsule.team, "session": row, "started_at": row.started_at},
    )
    page = admin_client.get(CHANGELIST).content.decode()
    play = reverse("recording-play", args=[live_capsule.pk, row.tag])
    assert f'<a href="{play}">play</a>' in page
    assert reverse("recording-play", args=[live_capsule.pk, unrecorded.tag]) not in page
