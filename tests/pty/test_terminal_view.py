"""The capsule terminal page: who may open it and which WebSocket it connects to."""

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from audit import trail
from capsules.models import Host, Membership, Sandbox, Team
from shares import links

pytestmark = pytest.mark.django_db


@pytest.fixture
def team() -> Team:
    return Team.objects.create(name="Acme", slug="acme")


@pytest.fixture
def other_team() -> Team:
    return Team.objects.create(name="Globex", slug="globex")


@pytest.fixture
def host() -> Host:
    return Host.objects.create(address="127.0.0.1:50071")


@pytest.fixture
def capsule(team: Team, host: Host) -> Sandbox:
    return Sandbox.objects.create(team=team, host=host, status=Sandbox.Status.RUNNING)


@pytest.fixture
def other_capsule(other_team: Team, host: Host) -> Sandbox:
    return Sandbox.objects.create(team=other_team, host=host, status=Sandbox.Status.RUNNING)


@pytest.fixture
def member(team: Team) -> User:
    user = User.objects.create_user("ada", password="pw-ada-123")
    Membership.objects.create(user=user, team=team)
    return user


@pytest.fixture
def staff() -> User:
    return User.objects.create_user("root", password="pw-root-123", is_staff=True)


def terminal_url(capsule_id: str) -> str:
    return reverse("capsule-terminal", kwargs={"capsule_id": capsule_id})


def logged_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_route_is_under_capsules() -> None:
    assert terminal_url("cl-abc") == "/capsules/cl-abc/terminal/"


def test_anonymous_is_sent_to_the_login(capsule: Sandbox) -> None:
    response = Client().get(terminal_url(capsule.id))
    assert response.status_code == 302
    assert response["Location"] == f"/login/?next=/capsules/{capsule.id}/terminal/"


def test_member_sees_page_with_team_ws_path(member: User, capsule: Sandbox) -> None:
    response = logged_in(member).get(terminal_url(capsule.id))
    assert response.status_code == 200
    html = response.content.decode()
    assert f'data-ws-path="/v1/capsules/{capsule.id}/pty"' in html
    assert f'data-capsule-id="{capsule.id}"' in html
    assert 'id="status" data-state="connecting"' in html
    assert response.context["capsule_status"] == "running"


def test_page_loads_xterm_and_its_own_static_files(member: User, capsule: Sandbox) -> None:
    html = logged_in(member).get(terminal_url(capsule.id)).content.decode()
    for src in (
        "/static/xterm/lib/xterm.js",
        "/static/xterm-addon-fit/lib/addon-fit.js",
        "/static/pty/terminal.js",
    ):
        assert f'<script src="{src}"></script>' in html
    for href in ("/static/xterm/css/xterm.css", "/static/pty/terminal.css"):
        assert f'<link rel="stylesheet" href="{href}">' in html


def test_other_teams_capsule_looks_missing(member: User, other_capsule: Sandbox) -> None:
    client = logged_in(member)
    foreign = client.get(terminal_url(other_capsule.id))
    missing = client.get(terminal_url("cl-00000000000000000000"))
    assert foreign.status_code == missing.status_code == 404
    assert foreign.content == missing.content


def test_unknown_capsule_is_404(member: User) -> None:
    assert logged_in(member).get(terminal_url("no-such-capsule")).status_code == 404


def test_inactive_member_is_sent_to_login(member: User, capsule: Sandbox) -> None:
    client = logged_in(member)
    User.objects.filter(pk=member.pk).update(is_active=False)
    assert client.get(terminal_url(capsule.id)).status_code == 302


def test_staff_outside_the_team_gets_admin_ws_path(staff: User, capsule: Sandbox) -> None:
    response = logged_in(staff).get(terminal_url(capsule.id))
    assert response.status_code == 200
    assert f'data-ws-path="/v1/admin/capsules/{capsule.id}/pty"' in response.content.decode()


def test_staff_member_uses_team_ws_path(staff: User, team: Team, capsule: Sandbox) -> None:
    Membership.objects.create(user=staff, team=team)
    response = logged_in(staff).get(terminal_url(capsule.id))
    assert f'data-ws-path="/v1/capsules/{capsule.id}/pty"' in response.content.decode()


def test_staff_gets_404_for_unknown_capsule(staff: User) -> None:
    assert logged_in(staff).get(terminal_url("cl-00000000000000000000")).status_code == 404


def test_capsule_id_is_escaped_in_the_page(member: User, team: Team, host: Host) -> None:
    odd: Any = Sandbox.objects.create(id='cl-"><b>x', team=team, host=host)
    html = logged_in(member).get(terminal_url(odd.id)).content.decode()
    assert "<b>x" not in html


def test_the_page_passes_on_the_tag_the_mode_and_new(client: Client, member: User, capsule: Sandbox) -> None:
    page = logged_in(member).get(terminal_url(capsule.id), {"tag": "pty-1a2b3c4d", "mode": "observer"})
    html = page.content.decode()
    assert 'data-tag="pty-1a2b3c4d"' in html
    assert 'data-mode="observer"' in html
    assert 'data-new=""' in html
    html = logged_in(member).get(terminal_url(capsule.id), {"new": "1", "mode": "boss"}).content.decode()
    assert 'data-new="1"' in html
    assert 'data-mode=""' in html
    html = logged_in(member).get(terminal_url(capsule.id), {"tag": '"><script>'}).content.decode()
    assert '"><script>' not in html
    assert 'data-tag="&quot;&gt;&lt;script&gt;"' in html


def test_a_share_link_opens_the_page_without_a_login(capsule: Sandbox) -> None:
    issued = links.issue(capsule, "pty-1a2b3c4d", 600, trail.SYSTEM, trail.Where())
    response = Client().get(f"/shared/{issued.token}/")
    assert response.status_code == 200
    html = response.content.decode()
    assert f'data-share-token="{issued.token}"' in html
    assert 'data-tag="pty-1a2b3c4d"' in html
    assert 'data-mode="observer"' in html
    assert f'data-ws-path="/v1/capsules/{capsule.id}/pty"' in html
    assert response["Referrer-Policy"] == "no-referrer"
    assert "no-store" in response["Cache-Control"]
    bad = Client().get(f"/shared/{issued.token[:-2]}xx/")
    assert bad.status_code == 404
    assert "invalid share link" in bad.content.decode()
    issued.link.expires_at = timezone.now() - timedelta(seconds=1)
    issued.link.save()
    gone = Client().get(f"/shared/{issued.token}/")
    assert gone.status_code == 410
    assert links.EXPIRED in gone.content.decode()
    assert issued.token not in gone.content.decode()
