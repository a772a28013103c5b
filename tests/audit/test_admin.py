"""The audit trail in the admin: listed, filtered, searched and linked, and read-only for everyone,
a superuser included. The admin's own changes (capsules, API keys) leave events naming the
person who made them."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from audit import trail
from audit.models import AuditEvent
from capsules.actions import ActionError, destroy_capsule
from capsules.models import APIKey, Host, Sandbox, Team, TerminalSession
from recordings.models import Recording

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:audit_auditevent_changelist")
ADDRESS = "192.0.2.99"


@pytest.fixture
def root() -> Any:
    return get_user_model().objects.create_superuser("root", "root@example.com", "root-password-1")


@pytest.fixture
def superuser(root: Any) -> Client:
    client = Client(REMOTE_ADDR=ADDRESS)
    client.force_login(root)
    return client


@pytest.fixture
def stored(team: Team) -> AuditEvent:
    return trail.record(
        trail.CAPSULE_PAUSE,
        trail.Actor("user", "user:alice"),
        outcome=trail.FAILURE,
        reason="capsule is paused; cannot pause",
        team_id=team.pk,
        capsule_id="cl-gone",
        session_tag="pty-0123abcd",
        where=trail.Where("203.0.113.50"),
    )


def listed(response: Any) -> list[int]:
    assert response.status_code == 200
    return [event.pk for event in response.context["cl"].result_list]


def change_url(event: AuditEvent) -> str:
    return reverse("admin:audit_auditevent_change", args=[event.pk])


# Read-only, whoever asks


def test_a_superuser_sees_a_read_only_page(superuser: Client, stored: AuditEvent) -> None:
    page = superuser.get(change_url(stored))
    assert page.status_code == 200
    assert page.context["has_change_permission"] is False
    assert page.context["has_delete_permission"] is False
    assert 'name="_save"' not in page.content.decode()
    assert "capsule is paused; cannot pause" in page.content.decode()


def test_a_superuser_cannot_post_a_change(superuser: Client, stored: AuditEvent) -> None:
    response = superuser.post(change_url(stored), {"reason": "nothing happened", "action": "capsule.create"})
    assert response.status_code == 403
    assert AuditEvent.objects.get(pk=stored.pk).reason == "capsule is paused; cannot pause"


def test_a_superuser_cannot_add(superuser: Client, db: None) -> None:
    assert superuser.get(reverse("admin:audit_auditevent_add")).status_code == 403
    assert (
        superuser.post(reverse("admin:audit_auditevent_add"), {"action": "capsule.create"}).status_code == 403
    )
    assert not AuditEvent.objects.filter(action="capsule.create").exists()


def test_a_superuser_cannot_delete(superuser: Client, stored: AuditEvent) -> None:
    url = reverse("admin:audit_auditevent_delete", args=[stored.pk])
    assert superuser.get(url).status_code == 403
    assert superuser.post(url, {"post": "yes"}).status_code == 403
    assert AuditEvent.objects.filter(pk=stored.pk).exists()


def test_the_bulk_delete_action_is_gone(superuser: Client, stored: AuditEvent) -> None:
    page = superuser.get(CHANGELIST)
    assert page.context["action_form"] is None  # no action at all, so no form to choose one
    assert "delete_selected" not in page.content.decode()
    response = superuser.post(
        CHANGELIST, {"action": "delete_selected", "_selected_action": [stored.pk], "post": "yes"}
    )
    assert response.status_code in (200, 302)
    assert AuditEvent.objects.filter(pk=stored.pk).exists()


def test_staff_need_the_view_permission(stored: AuditEvent) -> None:
    staff = get_user_model().objects.create_user("op", password="x", is_staff=True)
    client = Client()
    client.force_login(staff)
    assert client.get(CHANGELIST).status_code == 403


# Finding events


def test_filters_and_search(superuser: Client, stored: AuditEvent, team: Team, other_team: Team) -> None:
    other = trail.record(
        trail.AUTH_FAILED,
        trail.ANONYMOUS,
        outcome=trail.FAILURE,
        team_id=other_team.pk,
        where=trail.Where("198.51.100.1"),
    )
    assert set(listed(superuser.get(CHANGELIST))) >= {stored.pk, other.pk}
    assert listed(superuser.get(CHANGELIST, {"action": "capsule.pause"})) == [stored.pk]
    assert listed(superuser.get(CHANGELIST, {"outcome": "failure", "actor_type": "anonymous"})) == [other.pk]
    assert listed(
        superuser.get(CHANGELIST, {"team__id__exact": str(team.pk), "action": "capsule.pause"})
    ) == [stored.pk]
    for term in ("user:alice", "cl-gone", "pty-0123abcd", "203.0.113.50"):
        assert listed(superuser.get(CHANGELIST, {"q": term})) == [stored.pk], term
    year = timezone.now().year
    assert stored.pk in listed(superuser.get(CHANGELIST, {"at__year": str(year)}))
    assert listed(superuser.get(CHANGELIST, {"at__year": str(year - 1)})) == []


def test_links_to_the_capsule_its_session_and_its_recording(superuser: Client, team: Team) -> None:
    capsule = Sandbox.objects.create(team=team, status=Sandbox.Status.STOPPED)
    session = TerminalSession.objects.create(sandbox=capsule, tag="pty-89abcdef")
    Recording.objects.create(sandbox=capsule, team=team, tag="pty-89abcdef", started_at=timezone.now())
    event = trail.record(
        trail.TERMINAL_START,
        trail.SYSTEM,
        team_id=team.pk,
        capsule_id=capsule.pk,
        session_tag="pty-89abcdef",
    )
    for page in (superuser.get(CHANGELIST), superuser.get(change_url(event))):
        html = page.content.decode()
        assert reverse("admin:capsules_sandbox_change", args=[capsule.pk]) in html
        assert reverse("admin:capsules_terminalsession_change", args=[session.pk]) in html
        assert f"/capsules/{capsule.pk}/recordings/pty-89abcdef/" in html


def test_no_links_to_what_does_not_exist(superuser: Client, stored: AuditEvent) -> None:
    html = superuser.get(change_url(stored)).content.decode()
    assert "/admin/capsules/sandbox/cl-gone" not in html
    assert "/recordings/" not in html
    assert "cl-gone" in html


def test_an_event_of_a_deleted_team_still_shows(superuser: Client, team: Team) -> None:
    event = trail.record(trail.API_KEY_CREATE, trail.SYSTEM, team_id=team.pk)
    team_id = team.pk
    team.delete()
    assert event.pk in listed(superuser.get(CHANGELIST))
    assert f"{team_id} (deleted)" in superuser.get(change_url(event)).content.decode()


# The admin's own changes on the trail


def last(action: str) -> AuditEvent:
    return AuditEvent.objects.filter(action=action).latest("pk")


def test_a_key_made_on_the_team_page_is_recorded_with_its_scope(
    superuser: Client, root: Any, team: Team
) -> None:
    url = reverse("admin:capsules_team_new_api_key", args=[team.pk])
    assert superuser.post(url, {"name": "watcher", "scope": "terminal:observe"}).status_code == 302
    key = APIKey.objects.get(team=team, name="watcher")
    assert key.scope == "terminal:observe"
    event = last("api_key.create")
    assert (event.actor_label, event.user_id, event.team_id, event.client_address) == (
        "user:root",
        root.pk,
        team.pk,
        ADDRESS,
    )
    assert event.detail["scope"] == "terminal:observe"


def test_the_team_page_refuses_an_unknown_scope(superuser: Client, team: Team) -> None:
    url = reverse("admin:capsules_team_new_api_key", args=[team.pk])
    response = superuser.post(url, {"name": "x", "scope": "root"}, follow=True)
    assert [str(m) for m in response.context["messages"]] == ["'root' is not an API key scope."]
    assert not APIKey.objects.filter(name="x").exists()
    assert not AuditEvent.objects.filter(action="api_key.create").exists()


def test_a_key_added_in_its_own_admin_is_recorded(superuser: Client, team: Team) -> None:
    response = superuser.post(
        reverse("admin:capsules_apikey_add"),
        {"team": str(team.pk), "name": "ops", "scope": "terminal:observe"},
    )
    assert response.status_code == 302
    key = APIKey.objects.get(name="ops")
    assert key.scope == "terminal:observe"
    event = last("api_key.create")
    assert (event.actor_label, event.detail["key_id"]) == ("user:root", key.pk)


def test_the_scope_is_shown_and_fixed_after_creation(superuser: Client, team: Team) -> None:
    key = APIKey.objects.create(
        team=team, name="k", prefix="wrn_00000000", key_hash="0" * 64, scope="terminal:observe"
    )
    page = superuser.get(reverse("admin:capsules_apikey_change", args=[key.pk]))
    assert "scope" in page.context["adminform"].readonly_fields
    assert (
        "Observe terminals only"
        in superuser.get(reverse("admin:capsules_apikey_changelist")).content.decode()
    )


def test_revoking_keys_in_the_admin_is_recorded(superuser: Client, team: Team) -> None:
    key = APIKey.objects.create(team=team, name="k", prefix="wrn_00000000", key_hash="0" * 64)
    superuser.post(
        reverse("admin:capsules_apikey_changelist"), {"action": "revoke", "_selected_action": [key.pk]}
    )
    assert APIKey.objects.get(pk=key.pk).revoked_at is not None
    event = last("api_key.revoke")
    assert (event.actor_label, event.team_id, event.detail["prefix"]) == (
        "user:root",
        team.pk,
        "wrn_00000000",
    )


def test_a_refused_lifecycle_button_is_recorded(superuser: Client, team: Team, dead_host: Host) -> None:
    stranded = Sandbox.objects.create(team=team, host=dead_host, status=Sandbox.Status.RUNNING)
    superuser.post(reverse("admin:capsules_sandbox_pause", args=[stranded.pk]))
    event = last("capsule.pause")
    assert (event.outcome, event.actor_label, event.capsule_id, event.client_address) == (
        "failure",
        "user:root",
        stranded.pk,
        ADDRESS,
    )
    assert event.reason


@pytest.fixture
def created_in_admin(superuser: Client, team: Team, agent_host: Host) -> Iterator[Any]:
    data = {
        "team": str(team.pk),
        "template": "minimal",
        "vcpus": "1",
        "memory_mb": "256",
        "timeout_sec": "300",
        "metadata": "{}",
        "network": '{"allow_internet": true, "allow_out": [], "deny_out": []}',
    }
    response = superuser.post(reverse("admin:capsules_sandbox_add"), data)
    yield response
    for capsule in Sandbox.objects.filter(host=agent_host).exclude(status=Sandbox.Status.STOPPED):
        with contextlib.suppress(ActionError):
            destroy_capsule(capsule)


def test_creating_pausing_and_destroying_in_the_admin_are_recorded(
    superuser: Client, created_in_admin: Any, team: Team
) -> None:
    assert created_in_admin.status_code == 302
    capsule = Sandbox.objects.get(team=team)
    superuser.post(
        reverse("admin:capsules_sandbox_changelist"), {"action": "pause", "_selected_action": [capsule.pk]}
    )
    superuser.post(reverse("admin:capsules_sandbox_destroy", args=[capsule.pk]))
    events = AuditEvent.objects.filter(capsule_id=capsule.pk).order_by("pk")
    assert [(e.action, e.outcome, e.actor_label) for e in events] == [
        ("capsule.create", "success", "user:root"),
        ("capsule.pause", "success", "user:root"),
        ("capsule.destroy", "success", "user:root"),
    ]
    assert {e.client_address for e in events} == {ADDRESS}


def test_a_quota_refusal_in_the_admin_is_recorded(superuser: Client, team: Team, agent_host: Host) -> None:
    Team.objects.filter(pk=team.pk).update(max_capsules=0)
    data = {
        "team": str(team.pk),
        "template": "minimal",
        "vcpus": "1",
        "memory_mb": "512",
        "timeout_sec": "300",
        "metadata": "{}",
        "network": '{"allow_internet": true, "allow_out": [], "deny_out": []}',
    }
    assert superuser.post(reverse("admin:capsules_sandbox_add"), data).status_code == 200
    event = last("quota.refused")
    assert (event.outcome, event.actor_label, event.team_id) == ("failure", "user:root", team.pk)
    assert event.reason.startswith("capsule quota exceeded")


def test_the_team_page_offers_both_scopes(superuser: Client, team: Team) -> None:
    html = superuser.get(reverse("admin:capsules_team_change", args=[team.pk])).content.decode()
    assert '<select id="new-api-key-scope" name="scope">' in html
    assert '<option value="full">Full access</option>' in html
    assert '<option value="terminal:observe">Observe terminals only</option>' in html
