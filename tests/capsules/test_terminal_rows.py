"""Terminal-session rows follow what host agents report (capsules/terminals.py): a heartbeat's live
PTY tags close the rows of sessions gone from the host, reopen rows it still has, and add rows it
has none of; the monitor closes rows of destroyed capsules; `live_sessions` counts the open rows."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.utils import timezone

from capsules.actions import record_terminal_exit, record_terminal_started
from capsules.hosts import MAX_REPORTED_TAGS, record_heartbeat
from capsules.models import Host, Sandbox, Team, TerminalSession
from capsules.terminals import SESSION_GRACE, live_sessions

Status = Sandbox.Status
TAG_A, TAG_B, TAG_C = "pty-0000000a", "pty-0000000b", "pty-0000000c"


@pytest.fixture
def reporting_host(db: None) -> Host:
    return Host.objects.create(address="10.0.0.1:50071", last_heartbeat_at=timezone.now())


@pytest.fixture
def capsule(team: Team, reporting_host: Host) -> Sandbox:
    return Sandbox.objects.create(team=team, host=reporting_host, status=Status.RUNNING)


def started(capsule: Sandbox, tag: str, age: timedelta = 2 * SESSION_GRACE) -> TerminalSession:
    """A row the consumer opened for `tag`, `age` ago."""
    record_terminal_started(capsule.pk, tag, "user:alice", "/bin/bash", 42)
    TerminalSession.objects.filter(sandbox=capsule, tag=tag).update(
        started_at=timezone.now() - age, viewers=1
    )
    return TerminalSession.objects.get(sandbox=capsule, tag=tag)


def entry(capsule: Sandbox, **fields: Any) -> dict[str, Any]:
    return {"id": capsule.pk, "state": "running", "pty_sessions": len(fields.get("pty_tags", [])), **fields}


def beat(host: Host, *sandboxes: dict[str, Any]) -> None:
    record_heartbeat(host, {"sandboxes": list(sandboxes)})


def is_open(row: TerminalSession) -> bool:
    row.refresh_from_db()
    return row.ended_at is None


# Closing


def test_a_session_the_agent_no_longer_lists_is_closed(reporting_host: Host, capsule: Sandbox) -> None:
    gone, kept = started(capsule, TAG_A), started(capsule, TAG_B)
    beat(reporting_host, entry(capsule, pty_tags=[TAG_B]))
    gone.refresh_from_db()
    assert gone.ended_at is not None
    assert (gone.viewers, gone.exit_code) == (0, None)
    assert is_open(kept)


def test_a_session_started_just_now_is_given_time_to_appear(reporting_host: Host, capsule: Sandbox) -> None:
    young = started(capsule, TAG_A, age=timedelta(0))
    beat(reporting_host, entry(capsule, pty_tags=[]))
    assert is_open(young)


def test_the_sessions_of_a_capsule_the_agent_does_not_have_are_closed(
    reporting_host: Host, capsule: Sandbox
) -> None:
    row = started(capsule, TAG_A)
    beat(reporting_host)
    assert not is_open(row)


def test_an_older_agent_without_tags_closes_them_when_it_counts_none(
    reporting_host: Host, capsule: Sandbox
) -> None:
    row = started(capsule, TAG_A)
    beat(reporting_host, {"id": capsule.pk, "state": "running", "pty_sessions": 1})
    assert is_open(row)
    beat(reporting_host, {"id": capsule.pk, "state": "running", "pty_sessions": 0})
    assert not is_open(row)


def test_other_hosts_rows_are_left_alone(reporting_host: Host, capsule: Sandbox, team: Team) -> None:
    elsewhere = Host.objects.create(address="10.0.0.2:50071")
    theirs = started(Sandbox.objects.create(team=team, host=elsewhere, status=Status.RUNNING), TAG_A)
    beat(reporting_host, entry(capsule, pty_tags=[]))
    assert is_open(theirs)


def test_a_heartbeat_without_sandboxes_changes_no_row(reporting_host: Host, capsule: Sandbox) -> None:
    row = started(capsule, TAG_A)
    record_heartbeat(reporting_host, {"runtime": "bwrap"})
    assert is_open(row)


@pytest.mark.parametrize(
    "tags",
    [
        "pty-0000000a",
        [1],
        ["not a tag!"],
        ["pty-0000000a", None],
        [f"pty-{n:08x}" for n in range(MAX_REPORTED_TAGS + 1)],
    ],
)
def test_tags_that_are_not_a_list_of_tags_are_ignored(
    reporting_host: Host, capsule: Sandbox, tags: Any, caplog: pytest.LogCaptureFixture
) -> None:
    row = started(capsule, TAG_B)
    with caplog.at_level(logging.WARNING, logger="capsules.hosts"):
        beat(reporting_host, {"id": capsule.pk, "state": "running", "pty_sessions": 1, "pty_tags": tags})
    assert is_open(row)
    [message] = [r.getMessage() for r in caplog.records]
    assert message.startswith(
        f"heartbeat: sandboxes[0].pty_tags ignored: not a list of at most {MAX_REPORTED_TAGS} tags"
    )
    reporting_host.refresh_from_db()
    assert reporting_host.last_heartbeat_at is not None


# Reopening and adding


def test_a_row_closed_by_mistake_opens_again(reporting_host: Host, capsule: Sandbox) -> None:
    row = started(capsule, TAG_A)
    beat(reporting_host, entry(capsule, pty_tags=[]))
    assert not is_open(row)
    beat(reporting_host, entry(capsule, pty_tags=[TAG_A]))
    assert is_open(row)


def test_a_session_seen_to_exit_stays_ended(reporting_host: Host, capsule: Sandbox) -> None:
    row = started(capsule, TAG_A)
    record_terminal_exit(capsule.pk, TAG_A, 3)
    beat(reporting_host, entry(capsule, pty_tags=[TAG_A]))
    row.refresh_from_db()
    assert (row.ended_at is not None, row.exit_code) == (True, 3)


def test_a_live_session_without_a_row_gets_one(reporting_host: Host, capsule: Sandbox, team: Team) -> None:
    stranger = Sandbox.objects.create(
        team=team, host=Host.objects.create(address="10.0.0.3:1"), status="running"
    )
    beat(
        reporting_host,
        entry(capsule, pty_tags=[TAG_A, TAG_C]),
        entry(stranger, pty_tags=[TAG_B]),  # another host's capsule: not this agent's to report
        {"id": "cl-unknown", "state": "running", "pty_sessions": 1, "pty_tags": [TAG_B]},
    )
    rows = TerminalSession.objects.order_by("tag").values_list("sandbox_id", "tag", "ended_at", "started_by")
    assert list(rows) == [(capsule.pk, TAG_A, None, ""), (capsule.pk, TAG_C, None, "")]


def test_a_start_recorded_after_its_row_was_found_keeps_its_details(
    reporting_host: Host, capsule: Sandbox
) -> None:
    beat(reporting_host, entry(capsule, pty_tags=[TAG_A]))
    record_terminal_started(capsule.pk, TAG_A, "user:alice", "/bin/bash", 42)
    row = TerminalSession.objects.get()
    assert (row.started_by, row.command, row.pid, row.ended_at) == ("user:alice", "/bin/bash", 42, None)


def test_a_heartbeat_costs_a_few_queries_however_many_rows(
    reporting_host: Host, capsule: Sandbox, django_assert_max_num_queries: Any
) -> None:
    for n in range(20):
        started(capsule, f"pty-{n:08x}")
    live = [f"pty-{n:08x}" for n in range(10, 30)]
    # 12 for the terminal rows and the rest of the heartbeat; 2 for the capsules' metrics samples
    # (capsules/metrics.py: the capsules with their previous samples, the new samples).
    with django_assert_max_num_queries(14):
        beat(reporting_host, entry(capsule, pty_tags=live))
    assert live_sessions(capsule) == 20


# Counting, destroyed capsules


def test_live_sessions_counts_the_open_rows(capsule: Sandbox) -> None:
    assert live_sessions(capsule) == 0
    started(capsule, TAG_A)
    started(capsule, TAG_B)
    record_terminal_exit(capsule.pk, TAG_B, 0)
    assert live_sessions(capsule) == 1
    assert live_sessions(capsule.pk) == 1
    assert live_sessions("cl-unknown") == 0


def test_the_monitor_closes_rows_of_destroyed_capsules(
    capsule: Sandbox, team: Team, reporting_host: Host
) -> None:
    left_open = started(capsule, TAG_A)
    Sandbox.objects.filter(pk=capsule.pk).update(status=Status.STOPPED)
    running = Sandbox.objects.create(team=team, host=reporting_host, status=Status.RUNNING)
    still_live = started(running, TAG_B)
    call_command("monitor", "--once")
    assert not is_open(left_open)
    assert is_open(still_live)


def test_the_per_capsule_cap_is_a_setting(settings: Any) -> None:
    assert settings.PTY_MAX_SESSIONS_PER_CAPSULE == 32
