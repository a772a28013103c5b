"""The audit trail's core: events are written with who, what and where, and never change."""

from __future__ import annotations

import pytest
from django.db import DatabaseError, connection, transaction

from audit import trail
from audit.models import AppendOnly, AuditEvent
from capsules.models import APIKey, Team

pytestmark = pytest.mark.django_db


@pytest.fixture
def team() -> Team:
    return Team.objects.create(name="Audited", slug="audited")


def test_an_event_keeps_who_what_where_and_the_outcome(team: Team, django_user_model) -> None:
    user = django_user_model.objects.create_user("alice", password="pw-alice-1")
    where = trail.Where("203.0.113.9", "https://app.example", worker="w1:42")
    event = trail.record(
        trail.CAPSULE_PAUSE,
        trail.user_actor(user),
        outcome=trail.FAILURE,
        reason="capsule is not running",
        team_id=team.pk,
        capsule_id="cl-abc",
        where=where,
        detail={"status": "paused"},
    )
    stored = AuditEvent.objects.get(pk=event.pk)
    assert (stored.action, stored.outcome, stored.reason) == (
        "capsule.pause",
        "failure",
        "capsule is not running",
    )
    assert (stored.actor_type, stored.actor_label, stored.user_id) == ("user", "user:alice", user.pk)
    assert (stored.team_id, stored.capsule_id) == (team.pk, "cl-abc")
    assert (stored.client_address, stored.origin, stored.worker) == (
        "203.0.113.9",
        "https://app.example",
        "w1:42",
    )
    assert stored.detail == {"status": "paused"}


def test_an_unknown_action_is_refused() -> None:
    with pytest.raises(ValueError, match=r"unknown audit action 'capsule\.explode'"):
        trail.record("capsule.explode", trail.SYSTEM)


def test_where_reads_a_request_and_a_socket_scope(rf) -> None:
    request = rf.get("/", REMOTE_ADDR="198.51.100.7", HTTP_ORIGIN="https://x.example")
    where = trail.where_from_request(request)
    assert (where.client_address, where.origin, where.worker) == (
        "198.51.100.7",
        "https://x.example",
        trail.this_worker(),
    )
    scope = {"client": ["2001:db8::1", 5000], "headers": [(b"origin", b"http://localhost:8000")]}
    where = trail.where_from_scope(scope)
    assert (where.client_address, where.origin) == ("2001:db8::1", "http://localhost:8000")
    assert trail.where_from_scope({"client": ["not-an-ip", 0]}).client_address is None


def test_the_model_refuses_changes_and_deletes(team: Team) -> None:
    event = trail.record(trail.API_KEY_CREATE, trail.SYSTEM, team_id=team.pk)
    event.reason = "rewritten"
    with pytest.raises(AppendOnly, match="append-only"):
        event.save()
    with pytest.raises(AppendOnly):
        event.delete()
    with pytest.raises(AppendOnly):
        AuditEvent.objects.filter(pk=event.pk).update(reason="rewritten")
    with pytest.raises(AppendOnly):
        AuditEvent.objects.filter(pk=event.pk).delete()
    assert AuditEvent.objects.get(pk=event.pk).reason == ""


def test_the_database_refuses_changes_whoever_sends_them(team: Team) -> None:
    assert connection.vendor == "postgresql", "the suite runs on PostgreSQL, where the trigger is"
    event = trail.record(trail.API_KEY_CREATE, trail.SYSTEM, team_id=team.pk)
    for statement in (
        "UPDATE audit_auditevent SET reason = 'x' WHERE id = %s",
        "DELETE FROM audit_auditevent WHERE id = %s",
    ):
        with (
            pytest.raises(DatabaseError, match="append-only"),
            transaction.atomic(),
            connection.cursor() as cursor,
        ):
            cursor.execute(statement, [event.pk])
    assert AuditEvent.objects.filter(pk=event.pk, reason="").exists()


def test_deleting_a_team_or_key_leaves_its_events(team: Team) -> None:
    key = APIKey.objects.create(team=team, name="k", prefix="wrn_00000000", key_hash="0" * 64)
    key_id, team_id = key.pk, team.pk
    event = trail.record(trail.API_KEY_REVOKE, trail.key_actor(key), team_id=team_id)
    key.delete()
    team.delete()
    stored = AuditEvent.objects.get(pk=event.pk)
    assert (stored.team_id, stored.api_key_id, stored.actor_label) == (team_id, key_id, "key:wrn_00000000")
