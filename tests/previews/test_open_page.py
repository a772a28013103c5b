"""`/capsules/<id>/preview/<port>/`: a signed-in member is sent to the preview with a fresh link."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from capsules.models import Sandbox, Team
from previews.links import hash_token
from previews.models import PreviewLink

pytestmark = pytest.mark.django_db


@pytest.fixture
def running(team: Team) -> Sandbox:
    return Sandbox.objects.create(team=team, status=Sandbox.Status.RUNNING, started_at=timezone.now())


def signed_in(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_a_member_is_sent_to_the_preview_with_a_link(member: Any, running: Sandbox) -> None:
    response = signed_in(member).get(f"/capsules/{running.pk}/preview/3000/", HTTP_HOST="localhost:8000")
    assert response.status_code == 302
    location = urlsplit(response["Location"])
    assert (location.scheme, location.netloc, location.path) == (
        "http",
        f"3000-{running.pk}.localhost:8000",
        "/",
    )
    token = parse_qs(location.query)["wrenn_preview_token"][0]
    link = PreviewLink.objects.get(token_hash=hash_token(token))
    assert (link.sandbox_id, link.port, link.created_by) == (running.pk, 3000, "user:alice")
    assert response["Referrer-Policy"] == "no-referrer"


def test_another_teams_capsule_is_not_found(running: Sandbox, other_team: Team) -> None:
    stranger = get_user_model().objects.create_user("bob", password="x" * 12)
    response = signed_in(stranger).get(f"/capsules/{running.pk}/preview/3000/")
    assert response.status_code == 404
    assert not PreviewLink.objects.exists()


def test_a_port_is_canonical(member: Any, running: Sandbox) -> None:
    assert signed_in(member).get(f"/capsules/{running.pk}/preview/03000/").status_code == 404
    assert not PreviewLink.objects.exists()


def test_signing_in_comes_first(running: Sandbox) -> None:
    response = Client().get(f"/capsules/{running.pk}/preview/3000/")
    assert response.status_code == 302
    assert response["Location"].startswith("/login/")
