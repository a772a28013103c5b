"""Host tokens, heartbeats (function and HTTP view), liveness checks and host choice."""

import json
import re
import time
from collections.abc import Callable
from datetime import timedelta
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone
from pytest_django import Settings
from rest_framework.test import APIRequestFactory

from capsules.actions import create_capsule
from capsules.hosts import (
    MISSING_GRACE,
    check_hosts,
    hash_token,
    host_for_token,
    issue_host_token,
    record_heartbeat,
)
from capsules.hosts_api import HeartbeatView
from capsules.models import Host, Sandbox, Team
from capsules.placement import choose_host
from capsules.validation import ValidationFailed
from tests.support.hostagent import start_hostagent

Status = Sandbox.Status


@pytest.fixture
def reporting_host(db: None) -> Host:
    """A host that has sent heartbeats, the last one just now."""
    return Host.objects.create(address="10.0.0.1:50071", last_heartbeat_at=timezone.now())


def place(
    team: Team, host: Host, status: str = Status.RUNNING, memory_mb: int = 512, **fields: Any
) -> Sandbox:
    capsule = Sandbox.objects.create(team=team, host=host, status=status, memory_mb=memory_mb, **fields)
    # As if the status had settled a while ago, so heartbeats may judge it.
    Sandbox.objects.filter(pk=capsule.pk).update(last_updated=timezone.now() - 2 * MISSING_GRACE)
    return capsule


def status_of(capsule: Sandbox) -> tuple[str, str]:
    capsule.refresh_from_db()
    return capsule.status, capsule.status_before_missing


def post_heartbeat(body: Any, token: str | None, content_type: str = "application/json") -> Any:
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    request = APIRequestFactory().post("/v1/hosts/heartbeat", data, content_type=content_type, **headers)
    response = HeartbeatView.as_view()(request)
    response.render()
    return response


# Tokens


def test_issued_token_is_stored_only_as_hash_and_prefix(host: Host) -> None:
    raw = issue_host_token(host)
    host.refresh_from_db()
    assert raw.startswith("wrh_")
    assert len(raw) == 52
    assert host.token_hash == hash_token(raw)
    assert host.token_prefix == raw[:12]
    assert raw not in json.dumps(list(Host.objects.values()), default=str)


def test_token_can_be_issued_to_a_new_host(db: None) -> None:
    host = Host(address="10.0.0.3:50071")
    assert host_for_token(issue_host_token(host)) == host


def test_token_finds_its_host(host: Host) -> None:
    assert host_for_token(issue_host_token(host)) == host


@pytest.mark.parametrize("raw", ["", "wrh_", "wrh_" + "0" * 48, "wrn_" + "a" * 48, "wrh_" + "A" * 48])
def test_unknown_or_malformed_token_finds_nothing(host: Host, raw: str) -> None:
    issue_host_token(host)
    assert host_for_token(raw) is None


def test_a_new_token_retires_the_old_one(host: Host) -> None:
    old = issue_host_token(host)
    new = issue_host_token(host)
    assert host_for_token(old) is None
    assert host_for_token(new) == host


# Heartbeats


def test_heartbeat_records_what_the_agent_reports(host: Host) -> None:
    before = timezone.now()
    record_heartbeat(
        host,
        {
            "address": "10.0.0.9:50071",
            "runtime": "bwrap",
            "version": "0.2.0",
            "capacity": {"vcpus": 4, "memory_mb": 8192},
        },
    )
    host.refresh_from_db()
    assert host.address == "10.0.0.9:50071"
    assert (host.runtime, host.version, host.vcpus, host.memory_mb) == ("bwrap", "0.2.0", 4, 8192)
    assert host.last_heartbeat_at is not None
    assert host.last_heartbeat_at >= before


def test_heartbeat_accepts_capacity_at_the_top_level(host: Host) -> None:
    record_heartbeat(host, {"vcpus": 2, "memory_mb": 2048})
    host.refresh_from_db()
    assert (host.vcpus, host.memory_mb) == (2, 2048)


def test_heartbeat_brings_an_unreachable_host_online(host: Host) -> None:
    Host.objects.filter(pk=host.pk).update(status=Host.Status.UNREACHABLE)
    assert record_heartbeat(host, {}).status == Host.Status.ONLINE


def test_heartbeat_keeps_a_draining_host_draining(host: Host) -> None:
    Host.objects.filter(pk=host.pk).update(status=Host.Status.DRAINING)
    assert record_heartbeat(host, {}).status == Host.Status.DRAINING


def test_heartbeat_cannot_take_another_hosts_address(host: Host, reporting_host: Host) -> None:
    with pytest.raises(ValidationFailed, match=re.escape("address 10.0.0.1:50071 belongs to another host")):
        record_heartbeat(host, {"address": reporting_host.address})
    host.refresh_from_db()
    assert host.address == "127.0.0.1:50071"


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ([], "the heartbeat must be a JSON object"),
        ({"address": "nohost"}, "address must be host:port, got 'nohost'"),
        ({"address": "h:0"}, "address must be host:port, got 'h:0'"),
        ({"address": 5}, "address must be a string of at most 255 characters"),
        ({"capacity": 4}, "capacity must be an object with vcpus and memory_mb"),
        ({"capacity": {"vcpus": -1}}, "capacity.vcpus must be a non-negative integer"),
        ({"capacity": {"memory_mb": True}}, "capacity.memory_mb must be a non-negative integer"),
        ({"sandboxes": {}}, "sandboxes must be a list of at most 10000 objects"),
        ({"sandboxes": ["cl-1"]}, "sandboxes[0] must be an object with id, state and pty_sessions"),
        ({"sandboxes": [{"state": "running"}]}, "sandboxes[0].id is required"),
        (
            {"sandboxes": [{"id": "a", "pty_sessions": "2"}]},
            "sandboxes[0].pty_sessions must be a non-negative",
        ),
        ({"runtime": "x" * 33}, "runtime must be a string of at most 32 characters"),
    ],
)
def test_malformed_heartbeat_is_refused_and_changes_nothing(host: Host, payload: Any, message: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        record_heartbeat(host, payload)
    assert caught.value.message.startswith(message)
    host.refresh_from_db()
    assert host.last_heartbeat_at is None


def test_heartbeat_brings_back_a_missing_capsule_to_its_earlier_status(
    team: Team, reporting_host: Host
) -> None:
    capsule = place(team, reporting_host, Status.MISSING, status_before_missing=Status.PAUSED)
    record_heartbeat(reporting_host, {"sandboxes": [{"id": capsule.pk, "pty_sessions": 0}]})
    assert status_of(capsule) == (Status.PAUSED, "")


def test_agent_state_wins_over_the_remembered_status(team: Team, reporting_host: Host) -> None:
    capsule = place(team, reporting_host, Status.MISSING, status_before_missing=Status.PAUSED)
    record_heartbeat(reporting_host, {"sandboxes": [{"id": capsule.pk, "state": "running"}]})
    assert status_of(capsule) == (Status.RUNNING, "")


def test_capsule_the_agent_no_longer_reports_goes_missing(team: Team, reporting_host: Host) -> None:
    running = place(team, reporting_host, Status.RUNNING)
    paused = place(team, reporting_host, Status.PAUSED)
    record_heartbeat(reporting_host, {"sandboxes": []})
    assert status_of(running) == (Status.MISSING, Status.RUNNING)
    assert status_of(paused) == (Status.MISSING, Status.PAUSED)


def test_reported_capsule_stays_as_it_is(team: Team, reporting_host: Host) -> None:
    capsule = place(team, reporting_host, Status.RUNNING)
    record_heartbeat(reporting_host, {"sandboxes": [{"id": capsule.pk, "state": "running"}]})
    assert status_of(capsule) == (Status.RUNNING, "")


def test_capsule_that_just_settled_is_not_judged_by_an_older_report(team: Team, reporting_host: Host) -> None:
    capsule = Sandbox.objects.create(team=team, host=reporting_host, status=Status.RUNNING)
    record_heartbeat(reporting_host, {"sandboxes": []})
    assert status_of(capsule) == (Status.RUNNING, "")


@pytest.mark.parametrize("status", [Status.STARTING, Status.PAUSING, Status.STOPPING, Status.STOPPED])
def test_capsule_in_an_operation_or_stopped_is_left_alone(
    team: Team, reporting_host: Host, status: str
) -> None:
    capsule = place(team, reporting_host, status)
    record_heartbeat(reporting_host, {"sandboxes": []})
    assert status_of(capsule) == (status, "")


def test_heartbeat_without_a_sandbox_list_leaves_capsules_alone(team: Team, reporting_host: Host) -> None:
    capsule = place(team, reporting_host, Status.RUNNING)
    record_heartbeat(reporting_host, {"version": "0.2.0"})
    assert status_of(capsule) == (Status.RUNNING, "")


def test_heartbeat_only_reconciles_its_own_capsules(team: Team, reporting_host: Host, host: Host) -> None:
    elsewhere = place(team, host, Status.RUNNING)
    record_heartbeat(reporting_host, {"sandboxes": []})
    assert status_of(elsewhere) == (Status.RUNNING, "")


# The heartbeat view


def test_heartbeat_view_answers_host_id_and_interval(host: Host, settings: Settings) -> None:
    settings.WRENN_HOST_HEARTBEAT_INTERVAL_SEC = 7
    response = post_heartbeat({"version": "0.2.0"}, issue_host_token(host))
    assert response.status_code == 200
    assert json.loads(response.content) == {"host_id": str(host.pk), "interval": 7}
    host.refresh_from_db()
    assert host.version == "0.2.0"
    assert host.last_heartbeat_at is not None


def test_heartbeat_interval_defaults_to_ten_seconds(host: Host) -> None:
    assert json.loads(post_heartbeat({}, issue_host_token(host)).content)["interval"] == 10


@pytest.mark.parametrize("token", [None, "wrh_" + "0" * 48, "garbage"])
def test_heartbeat_view_refuses_missing_or_unknown_tokens(host: Host, token: str | None) -> None:
    issue_host_token(host)
    response = post_heartbeat({}, token)
    assert response.status_code == 401
    assert json.loads(response.content) == {
        "error": {"code": "unauthorized", "message": "invalid host token"}
    }
    host.refresh_from_db()
    assert host.last_heartbeat_at is None


def test_heartbeat_view_refuses_another_scheme(host: Host) -> None:
    token = issue_host_token(host)
    request = APIRequestFactory().post(
        "/v1/hosts/heartbeat", "{}", content_type="application/json", HTTP_AUTHORIZATION=f"Token {token}"
    )
    assert HeartbeatView.as_view()(request).status_code == 401


def test_heartbeat_view_refuses_bad_json(host: Host) -> None:
    response = post_heartbeat("{not json", issue_host_token(host))
    assert response.status_code == 400
    body = json.loads(response.content)
    assert body["error"]["code"] == "invalid_request"
    assert body["error"]["message"].startswith("JSON parse error")


def test_heartbeat_view_refuses_a_bad_payload_with_the_reason(host: Host) -> None:
    response = post_heartbeat({"capacity": {"vcpus": "many"}}, issue_host_token(host))
    assert response.status_code == 400
    assert json.loads(response.content) == {
        "error": {"code": "invalid_request", "message": "capacity.vcpus must be a non-negative integer"}
    }


# Liveness


def test_quiet_host_becomes_unreachable_and_its_capsules_missing(team: Team, reporting_host: Host) -> None:
    capsules = {status: place(team, reporting_host, status) for status in Status}
    later = timezone.now() + timedelta(seconds=31)
    assert check_hosts(later) == [reporting_host]
    reporting_host.refresh_from_db()
    assert reporting_host.status == Host.Status.UNREACHABLE
    lost = {Status.RUNNING, Status.PAUSED, Status.STARTING, Status.PAUSING, Status.RESUMING}
    for status, capsule in capsules.items():
        expected = (Status.MISSING, status) if status in lost else (status, "")
        assert status_of(capsule) == expected


def test_recent_heartbeat_keeps_a_host_online(reporting_host: Host) -> None:
    assert check_hosts(timezone.now() + timedelta(seconds=29)) == []
    reporting_host.refresh_from_db()
    assert reporting_host.status == Host.Status.ONLINE


def test_dead_after_follows_settings(reporting_host: Host, settings: Settings) -> None:
    settings.WRENN_HOST_DEAD_AFTER_SEC = 5
    assert check_hosts(timezone.now() + timedelta(seconds=6)) == [reporting_host]


def test_host_that_never_reported_is_never_declared_dead(team: Team, host: Host) -> None:
    capsule = place(team, host, Status.RUNNING)
    assert check_hosts(timezone.now() + timedelta(days=1)) == []
    host.refresh_from_db()
    assert host.status == Host.Status.ONLINE
    assert status_of(capsule) == (Status.RUNNING, "")


def test_quiet_draining_host_stays_draining_but_loses_its_capsules(team: Team, reporting_host: Host) -> None:
    Host.objects.filter(pk=reporting_host.pk).update(status=Host.Status.DRAINING)
    capsule = place(team, reporting_host, Status.RUNNING)
    assert [h.pk for h in check_hosts(timezone.now() + timedelta(seconds=31))] == [reporting_host.pk]
    reporting_host.refresh_from_db()
    assert reporting_host.status == Host.Status.DRAINING
    assert status_of(capsule) == (Status.MISSING, Status.RUNNING)


def test_second_check_changes_nothing_more(team: Team, reporting_host: Host) -> None:
    place(team, reporting_host, Status.RUNNING)
    later = timezone.now() + timedelta(seconds=31)
    check_hosts(later)
    assert check_hosts(later) == []


def test_heartbeat_after_an_outage_restores_host_and_capsules(team: Team, reporting_host: Host) -> None:
    running = place(team, reporting_host, Status.RUNNING)
    paused = place(team, reporting_host, Status.PAUSED)
    check_hosts(timezone.now() + timedelta(seconds=31))
    record_heartbeat(reporting_host, {"sandboxes": [{"id": running.pk}, {"id": paused.pk}]})
    reporting_host.refresh_from_db()
    assert reporting_host.status == Host.Status.ONLINE
    assert status_of(running) == (Status.RUNNING, "")
    assert status_of(paused) == (Status.PAUSED, "")


# Host choice


def test_no_host_no_choice(db: None) -> None:
    assert choose_host(1, 512) is None


def test_least_loaded_host_is_chosen(team: Team) -> None:
    busy = Host.objects.create(address="10.0.0.1:1")
    idle = Host.objects.create(address="10.0.0.2:1")
    place(team, busy)
    assert choose_host(1, 512) == idle


def test_equal_counts_are_decided_by_reserved_memory(team: Team) -> None:
    big = Host.objects.create(address="10.0.0.1:1")
    small = Host.objects.create(address="10.0.0.2:1")
    place(team, big, memory_mb=4096)
    place(team, small, memory_mb=256)
    assert choose_host(1, 512) == small


def test_stopped_and_failed_capsules_do_not_count(team: Team) -> None:
    first = Host.objects.create(address="10.0.0.1:1")
    second = Host.objects.create(address="10.0.0.2:1")
    place(team, first, Status.STOPPED)
    place(team, first, Status.ERROR)
    place(team, second, Status.PAUSED)
    assert choose_host(1, 512) == first


@pytest.mark.parametrize("status", [Host.Status.UNREACHABLE, Host.Status.DRAINING])
def test_only_online_hosts_are_chosen(db: None, status: str) -> None:
    Host.objects.create(address="10.0.0.1:1", status=status)
    assert choose_host(1, 512) is None


def test_host_without_room_for_the_memory_is_skipped(team: Team) -> None:
    full = Host.objects.create(address="10.0.0.1:1", memory_mb=1024)
    roomy = Host.objects.create(address="10.0.0.2:1", memory_mb=8192)
    place(team, roomy, memory_mb=2048)
    place(team, roomy, memory_mb=2048)
    assert choose_host(1, 1025) == roomy
    assert choose_host(1, 1024) == full


def test_host_with_too_few_vcpus_is_skipped(db: None) -> None:
    Host.objects.create(address="10.0.0.1:1", vcpus=2)
    assert choose_host(4, 512) is None
    assert choose_host(2, 512) is not None


def test_host_that_reported_no_capacity_is_assumed_to_fit(db: None) -> None:
    host = Host.objects.create(address="10.0.0.1:1")
    assert choose_host(8, 16384) == host


# manage.py create_host


def create_host(*args: str) -> str:
    stdout = StringIO()
    call_command("create_host", *args, stdout=stdout)
    return stdout.getvalue()


def test_create_host_prints_the_token_once_and_stores_only_its_hash(db: None) -> None:
    output = create_host("10.0.0.7:50071")
    [token] = [word for word in output.split() if word.startswith("wrh_")]
    host = Host.objects.get(address="10.0.0.7:50071")
    assert host_for_token(token) == host
    assert host.token_hash == hash_token(token)
    assert token not in json.dumps(list(Host.objects.values()), default=str)
    assert "will not be shown again" in output
    assert output.count(token) == 2  # the line with the token and the agent command line


def test_create_host_prints_the_agent_command_line(db: None) -> None:
    result = json.loads(create_host("10.0.0.7:50071", "--json", "--url", "https://wrenn.example/"))
    assert result["command"] == (
        f"HOSTAGENT_REGISTER_TOKEN={result['token']} "
        "python -m hostagent --listen 10.0.0.7:50071 --control-plane https://wrenn.example"
    )


def test_create_host_json_output(db: None) -> None:
    result = json.loads(create_host("10.0.0.7:50071", "--json"))
    host = Host.objects.get()
    assert set(result) == {"host_id", "address", "token", "token_prefix", "command"}
    assert (result["host_id"], result["address"]) == (str(host.pk), "10.0.0.7:50071")
    assert result["token_prefix"] == result["token"][:12] == host.token_prefix


def test_create_host_refuses_an_existing_address(host: Host) -> None:
    with pytest.raises(CommandError, match="already exists; use --rotate"):
        create_host(host.address)


def test_create_host_rotate_replaces_the_token(host: Host) -> None:
    old = issue_host_token(host)
    new = json.loads(create_host(host.address, "--rotate", "--json"))["token"]
    assert host_for_token(old) is None
    assert host_for_token(new) == host
    assert Host.objects.count() == 1


def test_create_host_rotate_needs_an_existing_host(db: None) -> None:
    with pytest.raises(CommandError, match=re.escape("no host 10.0.0.7:50071 to rotate")):
        create_host("10.0.0.7:50071", "--rotate")


def test_create_host_refuses_a_malformed_address(db: None) -> None:
    with pytest.raises(CommandError, match="address must be host:port"):
        create_host("nohost")
    assert not Host.objects.exists()


# A real agent reporting to a real server


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.mark.agent
def test_agent_heartbeats_register_it_and_bring_back_its_capsules(
    live_server: Any, team: Team, tmp_path: Path, settings: Settings
) -> None:
    settings.WRENN_HOST_HEARTBEAT_INTERVAL_SEC = 0.2
    host = Host.objects.create(address="placeholder:1")
    token = issue_host_token(host)
    process = start_hostagent(
        tmp_path / "agent",
        env={"HOSTAGENT_REGISTER_TOKEN": token},
        args=["--control-plane", live_server.url],
    )
    try:
        wait_until(lambda: Host.objects.get(pk=host.pk).address == process.address, "the first heartbeat")
        host.refresh_from_db()
        assert host.status == Host.Status.ONLINE
        assert host.runtime
        assert host.version
        assert host.vcpus > 0
        assert host.memory_mb > 0
        capsule = create_capsule(team)
        assert capsule.host == host
        Sandbox.objects.filter(pk=capsule.pk).update(
            status=Status.MISSING, status_before_missing=Status.RUNNING
        )
        wait_until(lambda: status_of(capsule) == (Status.RUNNING, ""), "the capsule to come back")
    finally:
        process.stop()
