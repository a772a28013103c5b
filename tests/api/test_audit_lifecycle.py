"""Capsule lifecycle on the audit trail, through the REST API on the real host agent: each
create, pause, resume and destroy leaves one event with its actor, where it came from and its
outcome, and each refusal or failure leaves its failure with the reason, which outlives the
rollback of the step that refused it."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db import connection
from django.utils import timezone

from audit.models import AuditEvent
from capsules import actions
from capsules.models import APIKey, Host, Sandbox, Team
from tests.api.contract import ContractClient
from tests.support.hostagent import free_port

CAPSULES = "/v1/capsules"
ADDRESS = "198.51.100.23"
Status = Sandbox.Status


def capsule_events(team: Team, action: str | None = None) -> list[AuditEvent]:
    events = AuditEvent.objects.filter(team=team).exclude(action__startswith="api_key.")
    if action is not None:
        events = events.filter(action=action)
    return list(events.order_by("pk"))


def only(team: Team, action: str | None = None) -> AuditEvent:
    (event,) = capsule_events(team, action)
    return event


def key_label(team: Team) -> str:
    return f"key:{APIKey.objects.get(team=team, name='ci').prefix}"


def post(client: ContractClient, path: str, body: Any = None) -> Any:
    return client.post(path, body, format="json", REMOTE_ADDR=ADDRESS, HTTP_ORIGIN="https://app.example")


def test_create_records_who_where_and_what(key_client: ContractClient, team: Team, host: Host) -> None:
    response = post(key_client, CAPSULES, {"vcpus": 1, "memory_mb": 256})
    assert response.status_code == 201
    event = only(team)
    assert (event.action, event.outcome, event.reason) == ("capsule.create", "success", "")
    assert (event.actor_type, event.actor_label, event.api_key_id) == (
        "api_key",
        key_label(team),
        APIKey.objects.get(team=team).pk,
    )
    assert (event.team_id, event.capsule_id) == (team.pk, response.json()["id"])
    assert (event.client_address, event.origin) == (ADDRESS, "https://app.example")
    assert event.worker
    assert event.detail == {"template": "minimal", "vcpus": 1, "memory_mb": 256}


def test_pause_resume_and_destroy_by_a_person(
    jwt_client: ContractClient, team: Team, member: Any, capsule: Sandbox
) -> None:
    before = len(capsule_events(team))  # the capsule fixture's own create, by the system
    for verb in ("pause", "resume"):
        assert post(jwt_client, f"{CAPSULES}/{capsule.pk}/{verb}").status_code == 200
    assert jwt_client.delete(f"{CAPSULES}/{capsule.pk}", REMOTE_ADDR=ADDRESS).status_code == 204
    events = capsule_events(team)[before:]
    assert [(e.action, e.outcome) for e in events] == [
        ("capsule.pause", "success"),
        ("capsule.resume", "success"),
        ("capsule.destroy", "success"),
    ]
    for event in events:
        assert (event.actor_type, event.actor_label, event.user_id) == ("user", "user:alice", member.pk)
        assert (event.capsule_id, event.team_id, event.client_address) == (capsule.pk, team.pk, ADDRESS)


def test_a_refused_pause_leaves_its_failure(key_client: ContractClient, team: Team, capsule: Sandbox) -> None:
    assert post(key_client, f"{CAPSULES}/{capsule.pk}/pause").status_code == 200
    assert post(key_client, f"{CAPSULES}/{capsule.pk}/pause").status_code == 409
    refused = capsule_events(team, "capsule.pause")[-1]
    assert (refused.outcome, refused.reason) == ("failure", "capsule is paused; cannot pause")
    assert (refused.actor_label, refused.capsule_id, refused.client_address) == (
        key_label(team),
        capsule.pk,
        ADDRESS,
    )


def test_a_refused_resume_and_destroy_leave_theirs(
    key_client: ContractClient, team: Team, host: Host
) -> None:
    stopped = Sandbox.objects.create(team=team, host=host, status=Status.STOPPED)
    assert post(key_client, f"{CAPSULES}/{stopped.pk}/resume").status_code == 409
    assert key_client.delete(f"{CAPSULES}/{stopped.pk}").status_code == 409
    resume, destroy = capsule_events(team)
    assert (resume.action, resume.outcome, resume.reason) == (
        "capsule.resume",
        "failure",
        "capsule is stopped; cannot resume",
    )
    assert (destroy.action, destroy.outcome, destroy.reason) == (
        "capsule.destroy",
        "failure",
        "capsule is stopped; cannot destroy",
    )


def test_an_agent_failure_leaves_its_failure(key_client: ContractClient, team: Team, host: Host) -> None:
    ghost = Sandbox.objects.create(team=team, host=host, status=Status.RUNNING, started_at=timezone.now())
    assert post(key_client, f"{CAPSULES}/{ghost.pk}/pause").status_code == 502
    event = only(team)
    assert (event.action, event.outcome, event.capsule_id) == ("capsule.pause", "failure", ghost.pk)
    assert event.reason.startswith("the host agent could not pause the capsule (NOT_FOUND")


def test_an_unreachable_host_leaves_a_failure(
    key_client: ContractClient, team: Team, capsule: Sandbox, host: Host
) -> None:
    Host.objects.filter(pk=host.pk).update(status=Host.Status.UNREACHABLE)
    assert key_client.delete(f"{CAPSULES}/{capsule.pk}").status_code == 503
    event = capsule_events(team, "capsule.destroy")[-1]
    assert (event.outcome, event.reason) == ("failure", actions.HOST_UNREACHABLE)
    Host.objects.filter(pk=host.pk).update(status=Host.Status.ONLINE)


def test_a_create_without_a_host_leaves_a_failure(key_client: ContractClient, team: Team) -> None:
    assert post(key_client, CAPSULES, {}).status_code == 503
    event = only(team)
    assert (event.action, event.outcome, event.reason, event.capsule_id) == (
        "capsule.create",
        "failure",
        actions.NO_CAPACITY,
        "",
    )


def test_a_create_the_agent_fails_names_the_capsule(key_client: ContractClient, team: Team) -> None:
    Host.objects.create(address=f"127.0.0.1:{free_port()}")
    assert post(key_client, CAPSULES, {}).status_code == 503
    event = only(team)
    assert (event.outcome, event.reason) == ("failure", actions.HOST_UNREACHABLE)
    assert event.capsule_id == Sandbox.objects.get(team=team).pk


def test_a_rejected_create_leaves_a_failure(key_client: ContractClient, team: Team, host: Host) -> None:
    assert post(key_client, CAPSULES, {"vcpus": 999}).status_code == 400
    event = only(team)
    assert (event.action, event.outcome) == ("capsule.create", "failure")
    assert event.reason.startswith("vcpus must be")


def test_a_quota_refusal_is_recorded_with_the_quotas_message(
    key_client: ContractClient, team: Team, host: Host
) -> None:
    Team.objects.filter(pk=team.pk).update(max_capsules=0)
    response = post(key_client, CAPSULES, {"vcpus": 1})
    assert response.status_code == 403
    event = only(team)
    assert (event.action, event.outcome, event.reason) == (
        "quota.refused",
        "failure",
        response.json()["error"]["message"],
    )
    assert event.reason.startswith("capsule quota exceeded: the team's limit is 0 capsules")
    assert (event.actor_label, event.client_address) == (key_label(team), ADDRESS)
    assert event.detail == {"template": "minimal", "vcpus": 1, "memory_mb": 512}
    assert not Sandbox.objects.filter(team=team).exists()


def test_the_idle_reaper_pauses_as_the_system(team: Team, capsule: Sandbox) -> None:
    Sandbox.objects.filter(pk=capsule.pk).update(
        timeout_sec=60, last_active_at=timezone.now() - timedelta(minutes=5)
    )
    assert actions.reap_idle() == [capsule.pk]
    event = only(team, "capsule.pause")
    assert (event.outcome, event.actor_type, event.actor_label, event.client_address) == (
        "success",
        "system",
        "system",
        None,
    )
    assert (event.team_id, event.capsule_id, event.detail) == (
        team.pk,
        capsule.pk,
        {"reason": "idle_timeout"},
    )


def test_a_reaper_failure_is_recorded_too(team: Team, host: Host) -> None:
    ghost = Sandbox.objects.create(
        team=team,
        host=host,
        status=Status.RUNNING,
        timeout_sec=60,
        last_active_at=timezone.now() - timedelta(minutes=5),
    )
    assert actions.reap_idle() == []
    event = only(team)
    assert (event.action, event.outcome, event.actor_type, event.capsule_id) == (
        "capsule.pause",
        "failure",
        "system",
        ghost.pk,
    )
    assert event.detail == {"reason": "idle_timeout"}


def test_refusals_are_committed_whatever_the_request_rolls_back(
    transactional_db: None, key_client: ContractClient, team: Team, host: Host
) -> None:
    """Without the test's own transaction around it: what is read here was committed."""
    Team.objects.filter(pk=team.pk).update(max_capsules=0)
    assert post(key_client, CAPSULES, {}).status_code == 403
    Team.objects.filter(pk=team.pk).update(max_capsules=None)
    stopped = Sandbox.objects.create(team=team, host=host, status=Status.STOPPED)
    assert post(key_client, f"{CAPSULES}/{stopped.pk}/pause").status_code == 409
    assert connection.in_atomic_block is False
    assert [(e.action, e.outcome) for e in capsule_events(team)] == [
        ("quota.refused", "failure"),
        ("capsule.pause", "failure"),
    ]
