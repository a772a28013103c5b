"""The admin pages render, filter, link to terminals, and create API keys whose raw value is shown once."""

from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from capsules.keys import authenticate_api_key, hash_key
from capsules.models import APIKey, Sandbox, Team


@pytest.mark.parametrize("model", ["team", "membership", "apikey", "host", "sandbox"])
def test_changelist_renders(
    admin_client: Client, model: str, member: Any, api_key: str, capsule: Sandbox
) -> None:
    response = admin_client.get(reverse(f"admin:capsules_{model}_changelist"))
    assert response.status_code == 200


@pytest.mark.parametrize("model", ["team", "membership", "apikey", "host", "sandbox"])
def test_add_form_renders(admin_client: Client, model: str) -> None:
    response = admin_client.get(reverse(f"admin:capsules_{model}_add"))
    assert response.status_code == 200


def test_team_change_page_shows_members_and_keys(
    admin_client: Client, team: Team, member: Any, api_key: str
) -> None:
    response = admin_client.get(reverse("admin:capsules_team_change", args=[team.pk]))
    assert response.status_code == 200
    content = response.content.decode()
    assert api_key[:12] in content
    assert api_key not in content
    assert hash_key(api_key) not in content


def test_sandbox_changelist_links_to_the_terminal(admin_client: Client, capsule: Sandbox) -> None:
    response = admin_client.get(reverse("admin:capsules_sandbox_changelist"))
    assert f'href="/capsules/{capsule.id}/terminal/"' in response.content.decode()


def test_sandbox_changelist_filters_by_status(admin_client: Client, capsule: Sandbox, team: Team) -> None:
    stopped = Sandbox.objects.create(team=team, status=Sandbox.Status.STOPPED)
    response = admin_client.get(reverse("admin:capsules_sandbox_changelist"), {"status__exact": "running"})
    assert response.status_code == 200
    content = response.content.decode()
    assert capsule.id in content
    assert stopped.id not in content


def test_sandbox_changelist_filters_by_team(admin_client: Client, capsule: Sandbox, other_team: Team) -> None:
    theirs = Sandbox.objects.create(team=other_team, status=Sandbox.Status.RUNNING)
    response = admin_client.get(
        reverse("admin:capsules_sandbox_changelist"), {"team__id__exact": str(other_team.id)}
    )
    assert response.status_code == 200
    content = response.content.decode()
    assert theirs.id in content
    assert capsule.id not in content


def test_api_key_add_form_asks_only_for_team_and_name(admin_client: Client) -> None:
    form = admin_client.get(reverse("admin:capsules_apikey_add")).context["adminform"].form
    assert list(form.fields) == ["team", "name"]


def test_api_key_change_page_never_shows_the_hash(admin_client: Client, api_key: str) -> None:
    row = APIKey.objects.get()
    response = admin_client.get(reverse("admin:capsules_apikey_change", args=[row.pk]))
    assert response.status_code == 200
    assert "key_hash" not in response.content.decode()
    assert row.key_hash not in response.content.decode()


def test_api_key_added_in_admin_is_shown_once_and_stored_as_hash(
    admin_client: Client, team: Team, admin_user: Any
) -> None:
    response = admin_client.post(
        reverse("admin:capsules_apikey_add"), {"team": str(team.id), "name": "from admin"}, follow=True
    )
    assert response.status_code == 200
    row = APIKey.objects.get(name="from admin")
    shown = [str(message) for message in response.context["messages"]]
    raw_keys = [word for text in shown for word in text.split() if word.startswith("wrn_")]
    assert len(raw_keys) == 1
    raw_key = raw_keys[0]
    assert row.key_hash == hash_key(raw_key)
    assert row.prefix == raw_key[:12]
    assert row.created_by == admin_user
    assert authenticate_api_key(raw_key) == row
    again = admin_client.get(reverse("admin:capsules_apikey_change", args=[row.pk]))
    assert raw_key not in again.content.decode()


def test_revoke_action_revokes_the_selected_keys(admin_client: Client, api_key: str) -> None:
    row = APIKey.objects.get()
    response = admin_client.post(
        reverse("admin:capsules_apikey_changelist"),
        {"action": "revoke", "_selected_action": [row.pk]},
        follow=True,
    )
    assert response.status_code == 200
    row.refresh_from_db()
    assert row.revoked_at is not None
    assert authenticate_api_key(api_key) is None
