"""The preview API: links issued (token shown once), listed, revoked; public ports; per team."""

from __future__ import annotations

from typing import Any

import pytest
from django.utils import timezone

from capsules.models import Sandbox, Team
from previews.links import hash_token
from previews.models import PreviewLink, PublicPort
from tests.api.contract import ContractClient


@pytest.fixture
def running(team: Team) -> Sandbox:
    """A running capsule of the team (a row: the preview API never calls its agent)."""
    return Sandbox.objects.create(team=team, status=Sandbox.Status.RUNNING, started_at=timezone.now())


@pytest.fixture
def theirs(other_team: Team) -> Sandbox:
    return Sandbox.objects.create(team=other_team, status=Sandbox.Status.RUNNING, started_at=timezone.now())


def error(response: Any) -> tuple[str, str]:
    body = response.json()["error"]
    return body["code"], body["message"]


def links_of(sandbox: Sandbox) -> str:
    return f"/v1/capsules/{sandbox.pk}/previews"


def test_a_link_is_issued_with_its_token_once(team_client: ContractClient, running: Sandbox) -> None:
    response = team_client.post(links_of(running), {"port": 3000, "expires_in": 600}, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["token"].startswith("wpt_")
    assert body["url"] == f"http://3000-{running.pk}.localhost/?wrenn_preview_token={body['token']}"
    assert body["status"] == "active"
    link = PreviewLink.objects.get(pk=body["id"])
    assert link.token_hash == hash_token(body["token"])  # the token itself is not kept
    assert 590 <= (link.expires_at - link.created_at).total_seconds() <= 600
    listed = team_client.get(links_of(running)).json()
    assert [item["id"] for item in listed] == [body["id"]]
    assert "token" not in listed[0]
    assert listed[0]["url"] == f"http://3000-{running.pk}.localhost/"


def test_a_link_lasts_the_default_hour_when_not_told(key_client: ContractClient, running: Sandbox) -> None:
    body = key_client.post(links_of(running), {"port": 3000}, format="json").json()
    link = PreviewLink.objects.get(pk=body["id"])
    assert 3590 <= (link.expires_at - link.created_at).total_seconds() <= 3600


def test_revoking_a_link(key_client: ContractClient, running: Sandbox) -> None:
    body = key_client.post(links_of(running), {"port": 3000}, format="json").json()
    response = key_client.delete(f"{links_of(running)}/{body['id']}")
    assert response.status_code == 204
    assert key_client.get(links_of(running)).json()[0]["status"] == "revoked"
    assert key_client.delete(f"{links_of(running)}/{body['id']}").status_code == 204  # again: no change
    response = key_client.delete(f"{links_of(running)}/pvl-0000000000000000")
    assert (response.status_code, error(response)) == (
        404,
        ("not_found", "preview link pvl-0000000000000000 not found"),
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "port: is required"),
        ({"port": 0}, "port: must be between 1 and 65535"),
        ({"port": 65536}, "port: must be between 1 and 65535"),
        ({"port": "3000"}, "port: must be an integer"),
        ({"port": True}, "port: must be an integer"),
        ({"port": 3000, "expires_in": 59}, "expires_in: must be at least 60 seconds"),
        ({"port": 3000, "expires_in": 604801}, "expires_in: must be at most 604800 seconds"),
        ({"port": 3000, "public": True}, "unknown field 'public'"),
    ],
)
def test_a_bad_link_request_is_refused_with_why(
    key_client: ContractClient, running: Sandbox, body: dict[str, Any], message: str
) -> None:
    response = key_client.post(links_of(running), body, format="json")
    assert (response.status_code, error(response)) == (400, ("invalid_request", message))


def test_another_teams_capsule_has_no_previews(key_client: ContractClient, theirs: Sandbox) -> None:
    for response in (
        key_client.get(links_of(theirs)),
        key_client.post(links_of(theirs), {"port": 3000}, format="json"),
        key_client.put(f"{links_of(theirs)}/ports/3000", {"public": True}, format="json"),
        key_client.get(f"{links_of(theirs)}/ports"),
    ):
        assert (response.status_code, error(response)) == (
            404,
            ("not_found", f"capsule {theirs.pk} not found"),
        )
    assert not PublicPort.objects.exists()


def test_without_credentials_401(client: ContractClient, running: Sandbox) -> None:
    assert client.get(links_of(running)).status_code == 401


def test_making_a_port_public_and_private_again(team_client: ContractClient, running: Sandbox) -> None:
    ports = f"{links_of(running)}/ports"
    response = team_client.put(f"{ports}/8080", {"public": True}, format="json")
    expected = {"port": 8080, "public": True, "url": f"http://8080-{running.pk}.localhost/"}
    assert (response.status_code, response.json()) == (200, expected)
    assert team_client.put(f"{ports}/8080", {"public": True}, format="json").json() == expected  # idempotent
    assert team_client.get(ports).json() == [expected]
    response = team_client.put(f"{ports}/8080", {"public": False}, format="json")
    assert response.json() == {**expected, "public": False}
    assert team_client.get(ports).json() == []
    team_client.put(f"{ports}/8080", {"public": True}, format="json")
    assert team_client.delete(f"{ports}/8080").status_code == 204
    assert team_client.get(ports).json() == []


@pytest.mark.parametrize("port", ["08080", "0", "65536", "http"])
def test_a_port_in_the_path_is_canonical(key_client: ContractClient, running: Sandbox, port: str) -> None:
    response = key_client.put(f"{links_of(running)}/ports/{port}", {"public": True}, format="json")
    assert response.status_code == 400
    assert f"port: '{port}' is not a port" in error(response)[1]


def test_public_must_be_a_boolean(key_client: ContractClient, running: Sandbox) -> None:
    response = key_client.put(f"{links_of(running)}/ports/8080", {"public": "yes"}, format="json")
    assert (response.status_code, error(response)) == (
        400,
        ("invalid_request", "public: must be true or false"),
    )
