"""The admin pages render, filter and link to terminals; API keys and host tokens are shown once;
hosts list their heartbeat age and capsule counts, and only operators' statuses can be set by hand.

The capsule lifecycle in the admin is in test_admin_lifecycle.py.
"""

import re
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from capsules.admin import age
from capsules.hosts import hash_token, host_for_token, issue_host_token
from capsules.keys import authenticate_api_key, hash_key
from capsules.models import APIKey, Host, Sandbox, Team
from tests.support.admin import change_form_data, staff_client_with


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


def test_api_key_add_form_asks_only_for_team_name_and_scope(admin_client: Client) -> None:
    form = admin_client.get(reverse("admin:capsules_apikey_add")).context["adminform"].form
    assert list(form.fields) == ["team", "name", "scope"]
    assert form.fields["scope"].initial == "full"


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
        reverse("admin:capsules_apikey_add"),
        {"team": str(team.id), "name": "from admin", "scope": "full"},
        follow=True,
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


# Hosts


@pytest.fixture
def staff_client(db: None) -> Client:
    """A staff user with no model permissions."""
    user = get_user_model().objects.create_user(username="staff", password="x", is_staff=True)
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def member_client(member: Any) -> Client:
    client = Client()
    client.force_login(member)
    return client


def shown(response: Any) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def words_starting(texts: list[str], prefix: str) -> list[str]:
    return [word for text in texts for word in text.split() if word.startswith(prefix)]


def test_host_list_shows_status_heartbeat_age_capsule_counts_runtime_and_version(
    admin_client: Client, host: Host, team: Team
) -> None:
    Host.objects.filter(pk=host.pk).update(
        last_heartbeat_at=timezone.now() - timedelta(seconds=12), runtime="bwrap", version="0.2.0"
    )
    for status in ["running", "running", "paused", "stopped", "stopped"]:
        Sandbox.objects.create(team=team, host=host, status=status)
    response = admin_client.get(reverse("admin:capsules_host_changelist"))
    content = response.content.decode()
    assert re.search(r'<td class="field-heartbeat">1[23] s ago</td>', content)
    assert '<td class="field-status">Online</td>' in content
    assert '<td class="field-running_count">2</td>' in content
    assert '<td class="field-active_count">3</td>' in content
    assert '<td class="field-runtime">bwrap</td>' in content
    assert '<td class="field-version">0.2.0</td>' in content


def test_host_that_never_reported_shows_never(admin_client: Client, host: Host) -> None:
    content = admin_client.get(reverse("admin:capsules_host_changelist")).content.decode()
    assert '<td class="field-heartbeat">never</td>' in content


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0 s ago"),
        (119, "119 s ago"),
        (120, "2 min ago"),
        (7_199, "119 min ago"),
        (7_200, "2 h ago"),
        (3 * 86_400, "3 d ago"),
    ],
)
def test_heartbeat_age_reads_in_the_largest_sensible_unit(seconds: int, text: str) -> None:
    now = timezone.now()
    assert age(now - timedelta(seconds=seconds), now) == text


def test_issue_token_action_shows_the_token_once_with_the_agent_command(
    admin_client: Client, host: Host
) -> None:
    response = admin_client.post(
        reverse("admin:capsules_host_changelist"),
        {"action": "issue_token", "_selected_action": [host.pk]},
        follow=True,
    )
    texts = shown(response)
    [raw_token] = words_starting(texts, "wrh_")
    host.refresh_from_db()
    assert host.token_hash == hash_token(raw_token)
    assert host_for_token(raw_token) == host
    assert (
        f"python -m hostagent --listen {host.address} --control-plane http://testserver "
        "--register-token-file "
    ) in texts[0]
    again = admin_client.get(reverse("admin:capsules_host_change", args=[host.pk])).content.decode()
    assert raw_token not in again


def test_issue_token_button_replaces_the_old_token(admin_client: Client, host: Host) -> None:
    old_token = issue_host_token(host)
    response = admin_client.post(reverse("admin:capsules_host_issue_token", args=[host.pk]), follow=True)
    assert response.redirect_chain[-1][0] == reverse("admin:capsules_host_change", args=[host.pk])
    [raw_token] = words_starting(shown(response), "wrh_")
    assert host_for_token(raw_token) == host
    assert host_for_token(old_token) is None


def test_adding_a_host_issues_its_token(admin_client: Client, db: None) -> None:
    response = admin_client.post(
        reverse("admin:capsules_host_add"), {"address": "10.0.0.8:50071", "status": "online"}, follow=True
    )
    [raw_token] = words_starting(shown(response), "wrh_")
    assert host_for_token(raw_token) == Host.objects.get(address="10.0.0.8:50071")


def test_issue_token_needs_the_change_permission(staff_client: Client, host: Host) -> None:
    response = staff_client.post(reverse("admin:capsules_host_issue_token", args=[host.pk]))
    assert response.status_code == 403
    host.refresh_from_db()
    assert host.token_hash == ""


def test_host_pages_never_show_the_token_hash(admin_client: Client, host: Host) -> None:
    issue_host_token(host)
    host.refresh_from_db()
    for url in (
        reverse("admin:capsules_host_changelist"),
        reverse("admin:capsules_host_change", args=[host.pk]),
    ):
        content = admin_client.get(url).content.decode()
        assert host.token_hash not in content
        assert "token_hash" not in content
    assert host.token_prefix in content


def test_host_form_edits_only_address_and_status(admin_client: Client, host: Host) -> None:
    form = admin_client.get(reverse("admin:capsules_host_change", args=[host.pk])).context["adminform"].form
    assert list(form.fields) == ["address", "status"]


def test_host_status_offers_online_and_draining(admin_client: Client, host: Host) -> None:
    form = admin_client.get(reverse("admin:capsules_host_change", args=[host.pk])).context["adminform"].form
    assert [value for value, _ in form.fields["status"].choices] == ["online", "draining"]


def test_unreachable_host_keeps_its_status_when_its_address_changes(admin_client: Client, host: Host) -> None:
    Host.objects.filter(pk=host.pk).update(status=Host.Status.UNREACHABLE)
    response = admin_client.post(
        reverse("admin:capsules_host_change", args=[host.pk]),
        {"address": "10.0.0.7:50071", "status": "unreachable"},
    )
    assert response.status_code == 302
    host.refresh_from_db()
    assert (host.address, host.status) == ("10.0.0.7:50071", Host.Status.UNREACHABLE)


def test_host_can_be_drained(admin_client: Client, host: Host) -> None:
    response = admin_client.post(
        reverse("admin:capsules_host_change", args=[host.pk]), {"address": host.address, "status": "draining"}
    )
    assert response.status_code == 302
    host.refresh_from_db()
    assert host.status == Host.Status.DRAINING


def test_host_cannot_be_marked_unreachable_by_hand(admin_client: Client, host: Host) -> None:
    response = admin_client.post(
        reverse("admin:capsules_host_change", args=[host.pk]),
        {"address": host.address, "status": "unreachable"},
    )
    assert response.status_code == 200
    assert "status" in response.context["adminform"].form.errors
    host.refresh_from_db()
    assert host.status == Host.Status.ONLINE


# API keys from the team page


def test_team_page_offers_a_new_api_key_form(admin_client: Client, team: Team) -> None:
    content = admin_client.get(reverse("admin:capsules_team_change", args=[team.pk])).content.decode()
    assert f'action="{reverse("admin:capsules_team_new_api_key", args=[team.pk])}"' in content


def test_new_api_key_from_the_team_page_is_shown_once(
    admin_client: Client, team: Team, admin_user: Any
) -> None:
    response = admin_client.post(
        reverse("admin:capsules_team_new_api_key", args=[team.pk]), {"name": "deploy"}, follow=True
    )
    assert response.redirect_chain[-1][0] == reverse("admin:capsules_team_change", args=[team.pk])
    [raw_key] = words_starting(shown(response), "wrn_")
    row = APIKey.objects.get(name="deploy")
    assert (row.team, row.created_by, row.key_hash) == (team, admin_user, hash_key(raw_key))
    assert authenticate_api_key(raw_key) == row
    again = admin_client.get(reverse("admin:capsules_team_change", args=[team.pk])).content.decode()
    assert raw_key not in again
    assert row.prefix in again


def test_new_api_key_needs_a_name(admin_client: Client, team: Team) -> None:
    response = admin_client.post(
        reverse("admin:capsules_team_new_api_key", args=[team.pk]), {"name": "  "}, follow=True
    )
    assert shown(response) == ["An API key needs a name."]
    assert not APIKey.objects.exists()


def test_new_api_key_needs_the_add_permission(staff_client: Client, team: Team) -> None:
    response = staff_client.post(reverse("admin:capsules_team_new_api_key", args=[team.pk]), {"name": "x"})
    assert response.status_code == 403
    assert not APIKey.objects.exists()


def test_new_api_key_needs_only_to_see_the_team(db: None, team: Team) -> None:
    user = get_user_model().objects.create_user(username="keys", password="x", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=["view_team", "add_apikey"]))
    client = Client()
    client.force_login(user)
    page = client.get(reverse("admin:capsules_team_change", args=[team.pk])).content.decode()
    assert reverse("admin:capsules_team_new_api_key", args=[team.pk]) in page
    response = client.post(reverse("admin:capsules_team_new_api_key", args=[team.pk]), {"name": "x"})
    assert response.status_code == 302
    assert APIKey.objects.get().created_by == user


def test_non_staff_user_cannot_create_api_keys(member_client: Client, team: Team) -> None:
    response = member_client.post(reverse("admin:capsules_team_new_api_key", args=[team.pk]), {"name": "x"})
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))
    assert not APIKey.objects.exists()


# Quotas on the team page


def team_page(client: Client, team: Team) -> Any:
    return client.get(reverse("admin:capsules_team_change", args=[team.pk]))


def test_team_page_says_what_an_empty_quota_means_and_what_is_in_use(
    admin_client: Client, team: Team, settings: Any
) -> None:
    settings.WRENN_TEAM_MAX_CAPSULES = 7
    Sandbox.objects.create(team=team, status=Sandbox.Status.PAUSED, vcpus=2, memory_mb=1024)
    Sandbox.objects.create(team=team, status=Sandbox.Status.STOPPED, vcpus=4, memory_mb=4096)
    Team.objects.filter(pk=team.pk).update(max_vcpus=3)
    page = team_page(admin_client, team)
    form = page.context["adminform"].form
    assert form.fields["max_capsules"].help_text == (
        "Empty: the default, 7 capsules (WRENN_TEAM_MAX_CAPSULES). 0 allows none."
    )
    assert form["max_vcpus"].value() == 3
    assert "1 of 7 capsules, 2 of 3 vCPUs, 1024 of 32768 MB" in page.content.decode()


def test_staff_user_overrides_a_teams_quota_in_the_change_form(
    db: None, team: Team, member: Any, api_key: str
) -> None:
    client = staff_client_with("operator", "view_team", "change_team")
    page = team_page(client, team)
    response = client.post(
        page.request["PATH_INFO"], change_form_data(page, max_capsules=50, max_memory_mb=65536)
    )
    assert response.status_code == 302, (
        response.context["adminform"].form.errors if response.context else None
    )
    team.refresh_from_db()
    assert (team.max_capsules, team.max_vcpus, team.max_memory_mb) == (50, None, 65536)
    # The members and keys shown on the page are kept as they were.
    assert team.memberships.count() == 1
    assert team.api_keys.filter(revoked_at__isnull=True).count() == 1


def test_emptying_an_override_goes_back_to_the_default(admin_client: Client, team: Team) -> None:
    Team.objects.filter(pk=team.pk).update(max_capsules=50)
    page = team_page(admin_client, team)
    assert (
        admin_client.post(page.request["PATH_INFO"], change_form_data(page, max_capsules="")).status_code
        == 302
    )
    team.refresh_from_db()
    assert team.max_capsules is None


def test_a_negative_quota_is_refused(admin_client: Client, team: Team) -> None:
    page = team_page(admin_client, team)
    response = admin_client.post(page.request["PATH_INFO"], change_form_data(page, max_vcpus=-1))
    assert response.status_code == 200
    assert response.context["adminform"].form.errors == {
        "max_vcpus": ["Ensure this value is greater than or equal to 0."]
    }
    team.refresh_from_db()
    assert team.max_vcpus is None


def test_quotas_need_the_change_permission(db: None, team: Team) -> None:
    client = staff_client_with("viewer", "view_team")
    page = team_page(client, team)
    assert client.post(page.request["PATH_INFO"], {"max_capsules": 50}).status_code == 403
    team.refresh_from_db()
    assert team.max_capsules is None


@pytest.mark.parametrize("model", ["team", "host", "sandbox"])
def test_non_staff_user_is_sent_to_the_login_page(member_client: Client, model: str) -> None:
    response = member_client.get(reverse(f"admin:capsules_{model}_changelist"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))
