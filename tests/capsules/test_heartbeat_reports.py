"""What a heartbeat reports beyond liveness: out-of-memory kills per capsule, which become events on
the capsule once per kill, and the isolation the host gives, kept on its row."""

import json
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIRequestFactory

from capsules.events import EVENTS_KEPT, OOM_KILL
from capsules.hosts import MISSING_GRACE, check_hosts, issue_host_token, record_heartbeat
from capsules.hosts_api import HeartbeatView
from capsules.models import Host, Sandbox, Team
from capsules.validation import ValidationFailed

Status = Sandbox.Status
ISOLATION = {
    "network": {"on": True, "reason": ""},
    "limits": {"on": False, "reason": "no writable cgroup hierarchy"},
    "seccomp": {"on": True, "reason": ""},
}
NOT_AN_ISOLATION_REPORT = (
    'isolation must be an object of at most 16 parts, such as {"network": {"on": true, "reason": ""}}'
)
BAD_PART_NAME = "must be 1 to 32 lowercase letters, digits or '_', starting with a letter"


@pytest.fixture
def reporting_host(db: None) -> Host:
    return Host.objects.create(address="10.0.0.1:50071", last_heartbeat_at=timezone.now())


@pytest.fixture
def small_capsule(team: Team, reporting_host: Host) -> Sandbox:
    """A running capsule with a 128 MiB limit whose status settled a while ago."""
    capsule = Sandbox.objects.create(team=team, host=reporting_host, status=Status.RUNNING, memory_mb=128)
    Sandbox.objects.filter(pk=capsule.pk).update(last_updated=timezone.now() - 2 * MISSING_GRACE)
    return capsule


def report(host: Host, *sandboxes: dict[str, Any], **fields: Any) -> None:
    record_heartbeat(host, {"sandboxes": list(sandboxes), **fields})


def kills(capsule: Sandbox, count: Any) -> dict[str, Any]:
    return {"id": capsule.pk, "state": "running", "pty_sessions": 1, "oom_kills": count}


def events_of(capsule: Sandbox) -> list[dict[str, Any]]:
    capsule.refresh_from_db()
    return list(capsule.events)


def messages_of(capsule: Sandbox) -> list[str]:
    return [event["message"] for event in events_of(capsule)]


# Out-of-memory kills


def test_a_kill_becomes_an_event_on_the_capsule(reporting_host: Host, small_capsule: Sandbox) -> None:
    before = timezone.now()
    report(reporting_host, kills(small_capsule, 1))
    [event] = events_of(small_capsule)
    assert (event["kind"], event["message"]) == (
        OOM_KILL,
        "the out-of-memory killer ended 1 process (memory limit 128 MiB)",
    )
    assert before <= datetime.fromisoformat(event["at"]) <= timezone.now()
    assert small_capsule.oom_kills == 1


def test_the_same_count_again_is_no_new_event(reporting_host: Host, small_capsule: Sandbox) -> None:
    for _ in range(3):
        report(reporting_host, kills(small_capsule, 2))
    assert messages_of(small_capsule) == ["the out-of-memory killer ended 2 processes (memory limit 128 MiB)"]


def test_a_growing_count_records_the_new_kills_only(reporting_host: Host, small_capsule: Sandbox) -> None:
    report(reporting_host, kills(small_capsule, 1))
    report(reporting_host, kills(small_capsule, 4))
    assert messages_of(small_capsule) == [
        "the out-of-memory killer ended 1 process (memory limit 128 MiB)",
        "the out-of-memory killer ended 3 processes (memory limit 128 MiB)",
    ]
    assert small_capsule.oom_kills == 4


def test_no_kills_is_no_event(reporting_host: Host, small_capsule: Sandbox) -> None:
    report(reporting_host, kills(small_capsule, 0))
    assert events_of(small_capsule) == []


def test_a_count_that_went_down_is_the_new_baseline(reporting_host: Host, small_capsule: Sandbox) -> None:
    """The host made the capsule's environment again: its count starts over."""
    report(reporting_host, kills(small_capsule, 5))
    report(reporting_host, kills(small_capsule, 0))
    assert (len(events_of(small_capsule)), small_capsule.oom_kills) == (1, 0)
    report(reporting_host, kills(small_capsule, 1))
    assert messages_of(small_capsule) == [
        "the out-of-memory killer ended 5 processes (memory limit 128 MiB)",
        "the out-of-memory killer ended 1 process (memory limit 128 MiB)",
    ]
    assert small_capsule.oom_kills == 1


def test_events_keep_only_the_latest(reporting_host: Host, small_capsule: Sandbox) -> None:
    for count in range(1, EVENTS_KEPT + 6):
        report(reporting_host, kills(small_capsule, count))
    events = events_of(small_capsule)
    assert len(events) == EVENTS_KEPT
    assert small_capsule.oom_kills == EVENTS_KEPT + 5
    assert all(event["message"].startswith("the out-of-memory killer ended 1 process") for event in events)


def test_an_event_leaves_the_capsules_status_and_last_update_alone(
    reporting_host: Host, small_capsule: Sandbox
) -> None:
    settled = Sandbox.objects.get(pk=small_capsule.pk).last_updated
    report(reporting_host, kills(small_capsule, 1))
    small_capsule.refresh_from_db()
    assert (small_capsule.status, small_capsule.last_updated) == (Status.RUNNING, settled)


def test_a_host_cannot_put_events_on_another_hosts_capsule(
    team: Team, reporting_host: Host, small_capsule: Sandbox
) -> None:
    intruder = Host.objects.create(address="10.0.0.2:50071", last_heartbeat_at=timezone.now())
    report(intruder, kills(small_capsule, 3))
    assert events_of(small_capsule) == []
    assert small_capsule.oom_kills == 0


@pytest.mark.parametrize("count", [None, -1, "2", 2.0, True, [1], {"n": 1}, 2**31])
def test_a_missing_or_malformed_count_is_ignored(
    reporting_host: Host, small_capsule: Sandbox, count: Any
) -> None:
    """Older agents send no count; a malformed one must not cost the host its heartbeat."""
    record_heartbeat(reporting_host, {"version": "0.3.0", "sandboxes": [kills(small_capsule, count)]})
    assert events_of(small_capsule) == []
    reporting_host.refresh_from_db()
    assert reporting_host.version == "0.3.0"


def test_a_sandbox_without_the_key_is_ignored(reporting_host: Host, small_capsule: Sandbox) -> None:
    report(reporting_host, {"id": small_capsule.pk, "state": "running"})
    assert (events_of(small_capsule), small_capsule.oom_kills) == ([], 0)


def test_kills_of_a_capsule_back_from_missing_are_recorded(
    reporting_host: Host, small_capsule: Sandbox
) -> None:
    Sandbox.objects.filter(pk=small_capsule.pk).update(
        status=Status.MISSING, status_before_missing=Status.RUNNING
    )
    report(reporting_host, kills(small_capsule, 1))
    assert len(events_of(small_capsule)) == 1
    assert small_capsule.status == Status.RUNNING


# Isolation


def isolation_of(host: Host) -> Any:
    host.refresh_from_db()
    return host.isolation


def test_isolation_is_kept_on_the_host(reporting_host: Host) -> None:
    record_heartbeat(reporting_host, {"isolation": ISOLATION})
    assert isolation_of(reporting_host) == ISOLATION


def test_a_host_that_never_reported_isolation_has_none(reporting_host: Host) -> None:
    record_heartbeat(reporting_host, {"version": "0.2.0"})
    assert isolation_of(reporting_host) is None


@pytest.mark.parametrize("payload", [{}, {"isolation": None}])
def test_a_heartbeat_without_isolation_keeps_the_last_report(reporting_host: Host, payload: Any) -> None:
    record_heartbeat(reporting_host, {"isolation": ISOLATION})
    record_heartbeat(reporting_host, payload)
    assert isolation_of(reporting_host) == ISOLATION


def test_a_new_report_replaces_the_old_one(reporting_host: Host) -> None:
    record_heartbeat(reporting_host, {"isolation": ISOLATION})
    record_heartbeat(reporting_host, {"isolation": {"network": {"on": False, "reason": "no netns"}}})
    assert isolation_of(reporting_host) == {"network": {"on": False, "reason": "no netns"}}


def test_parts_beyond_the_three_are_kept(reporting_host: Host) -> None:
    record_heartbeat(reporting_host, {"isolation": {**ISOLATION, "userns": {"on": True}}})
    assert isolation_of(reporting_host) == {**ISOLATION, "userns": {"on": True, "reason": ""}}


def test_other_keys_inside_a_part_are_dropped(reporting_host: Host) -> None:
    part = {"on": True, "reason": "", "detail": "x" * 10_000}
    record_heartbeat(reporting_host, {"isolation": {"seccomp": part}})
    assert isolation_of(reporting_host) == {"seccomp": {"on": True, "reason": ""}}


@pytest.mark.parametrize(
    ("isolation", "message"),
    [
        (
            "on",
            NOT_AN_ISOLATION_REPORT,
        ),
        (
            {f"part{i}": {"on": True} for i in range(17)},
            NOT_AN_ISOLATION_REPORT,
        ),
        (
            {"Network": {"on": True}},
            "isolation part 'Network' " + BAD_PART_NAME,
        ),
        (
            {"": {"on": True}},
            "isolation part '' " + BAD_PART_NAME,
        ),
        ({"network": True}, "isolation.network must be an object with on and reason"),
        ({"network": {"reason": "x"}}, "isolation.network.on must be true or false"),
        ({"network": {"on": "yes"}}, "isolation.network.on must be true or false"),
        (
            {"limits": {"on": False, "reason": 3}},
            "isolation.limits.reason must be a string of at most 500 characters",
        ),
        (
            {"limits": {"on": False, "reason": "x" * 501}},
            "isolation.limits.reason must be a string of at most 500 characters",
        ),
    ],
)
def test_malformed_isolation_is_refused_and_changes_nothing(
    reporting_host: Host, isolation: Any, message: str
) -> None:
    record_heartbeat(reporting_host, {"isolation": ISOLATION})
    with pytest.raises(ValidationFailed) as caught:
        record_heartbeat(reporting_host, {"isolation": isolation})
    assert caught.value.message == message
    assert isolation_of(reporting_host) == ISOLATION


def test_the_heartbeat_view_takes_both_reports(reporting_host: Host, small_capsule: Sandbox) -> None:
    token = issue_host_token(reporting_host)
    body = {"isolation": ISOLATION, "sandboxes": [kills(small_capsule, 1)]}
    request = APIRequestFactory().post(
        "/v1/hosts/heartbeat",
        json.dumps(body),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    response = HeartbeatView.as_view()(request)
    assert response.status_code == 200
    assert isolation_of(reporting_host) == ISOLATION
    assert len(events_of(small_capsule)) == 1


def test_isolation_survives_the_host_going_quiet(reporting_host: Host) -> None:
    """What a host gave is still what it gave while it is unreachable; the admin shows both."""
    record_heartbeat(reporting_host, {"isolation": ISOLATION})
    check_hosts(timezone.now() + timedelta(hours=1))
    reporting_host.refresh_from_db()
    assert (reporting_host.status, reporting_host.isolation) == (Host.Status.UNREACHABLE, ISOLATION)
