"""Who may open a preview, decided in-process on database rows (the stack tests drive it end to end)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from capsules.keys import create_api_key
from capsules.models import Host, Membership, Sandbox, Team
from previews import links
from previews.access import Denied, authorize
from previews.hosts import PreviewTarget

pytestmark = pytest.mark.django_db


@pytest.fixture
def running(team: Team) -> Sandbox:
    host = Host.objects.create(address="127.0.0.1:1")
    return Sandbox.objects.create(
        team=team, host=host, status=Sandbox.Status.RUNNING, started_at=timezone.now()
    )


def target(sandbox: Sandbox, port: int = 3000) -> PreviewTarget:
    return PreviewTarget(port, sandbox.pk, f"{port}-{sandbox.pk}.localhost:8000")


def scope(kind: str = "http", query: str = "", **headers: str) -> dict[str, Any]:
    return {
        "type": kind,
        "method": "GET",
        "scheme": "http",
        "query_string": query.encode(),
        "headers": [(k.replace("_", "-").lower().encode(), v.encode()) for k, v in headers.items()],
    }


def refusal(request: dict[str, Any], preview: PreviewTarget) -> tuple[int, str]:
    with pytest.raises(Denied) as denied:
        authorize(request, preview)
    return denied.value.status, denied.value.message


def test_the_teams_key_opens_it_and_counts_as_activity(running: Sandbox, api_key: str) -> None:
    access = authorize(scope(x_api_key=api_key), target(running))
    assert (access.sandbox_id, access.port, access.host_address, access.method) == (
        running.pk,
        3000,
        "127.0.0.1:1",
        "api_key",
    )
    running.refresh_from_db()
    assert running.last_active_at is not None


def test_no_credentials_is_401_whether_or_not_the_capsule_exists(running: Sandbox) -> None:
    missing = PreviewTarget(3000, "cl-missing", "3000-cl-missing.localhost")
    assert refusal(scope(), target(running))[0] == refusal(scope(), missing)[0] == 401


def test_another_teams_key_is_404(running: Sandbox, other_team: Team) -> None:
    _, theirs = create_api_key(other_team, "theirs")
    assert refusal(scope(x_api_key=theirs), target(running)) == (404, f"capsule {running.pk} not found")


def test_a_capsule_not_running_is_409(running: Sandbox, api_key: str) -> None:
    Sandbox.objects.filter(pk=running.pk).update(status=Sandbox.Status.PAUSED)
    assert refusal(scope(x_api_key=api_key), target(running)) == (
        409,
        f"capsule {running.pk} is paused, not running",
    )


def test_an_unreachable_host_is_503(running: Sandbox, api_key: str) -> None:
    Host.objects.update(status=Host.Status.UNREACHABLE)
    assert refusal(scope(x_api_key=api_key), target(running)) == (503, "sandbox host is not reachable")


def test_a_capsule_missing_with_its_host_is_503(running: Sandbox, api_key: str) -> None:
    Sandbox.objects.filter(pk=running.pk).update(status=Sandbox.Status.MISSING)
    assert refusal(scope(x_api_key=api_key), target(running)) == (503, "sandbox host is not reachable")


def test_a_link_opens_its_own_port_only_until_revoked_or_expired(running: Sandbox) -> None:
    issued = links.issue_link(running, 3000, 600, "test")
    cookie = {"cookie": f"wrenn_preview={issued.token}"}
    assert authorize(scope(**cookie), target(running)).method == "link"
    access = authorize(scope(query=f"wrenn_preview_token={issued.token}"), target(running))
    assert access.link_token == issued.token
    assert 590 <= access.link_seconds_left <= 600
    assert refusal(scope(**cookie), target(running, 3001)) == (401, links.UNKNOWN)
    links.revoke_link(issued.link)
    assert refusal(scope(**cookie), target(running)) == (401, links.REVOKED)
    other = links.issue_link(running, 3000, 600, "test")
    type(other.link).objects.filter(pk=other.link.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert refusal(scope(query=f"wrenn_preview_token={other.token}"), target(running)) == (401, links.EXPIRED)


def test_a_public_port_needs_nothing(running: Sandbox) -> None:
    links.set_public(running, 3000, True, "test")
    assert authorize(scope(), target(running)).method == "public"
    assert refusal(scope(), target(running, 3001))[0] == 401


def test_a_members_session_opens_it_and_a_strangers_is_404(running: Sandbox, team: Team) -> None:
    users = get_user_model().objects
    member, stranger = users.create_user("m", password="x" * 12), users.create_user("s", password="x" * 12)
    Membership.objects.create(user=member, team=team)
    for user, expected in ((member, None), (stranger, 404)):
        client = Client()
        client.force_login(user)
        request = scope(cookie=f"sessionid={client.cookies['sessionid'].value}")
        if expected is None:
            assert authorize(request, target(running)).method == "session"
        else:
            assert refusal(request, target(running))[0] == expected
