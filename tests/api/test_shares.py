"""The share-link API: a link into one live terminal session is issued (token once), listed, revoked;
every bad request gets its own error; another team's capsule is a missing one; a share token opens
nothing of the REST API; each change is in the audit trail."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from audit.models import AuditEvent
from capsules.api.authentication import OBSERVE_ONLY
from capsules.keys import create_api_key
from capsules.models import Sandbox, Team, TerminalSession
from shares.links import hash_token
from shares.models import ShareLink
from shares.serializers import PEER_REFUSED
from tests.api.contract import Contract, ContractClient

TAG = "pty-1a2b3c4d"


@pytest.fixture
def running(team: Team) -> Sandbox:
    """A running capsule of the team with one live session (rows: the API never calls an agent)."""
    sandbox = Sandbox.objects.create(team=team, status=Sandbox.Status.RUNNING, started_at=timezone.now())
    TerminalSession.objects.create(sandbox=sandbox, tag=TAG, started_by="user:alice")
    return sandbox


@pytest.fixture
def theirs(other_team: Team) -> Sandbox:
    sandbox = Sandbox.objects.create(
        team=other_team, status=Sandbox.Status.RUNNING, started_at=timezone.now()
    )
    TerminalSession.objects.create(sandbox=sandbox, tag=TAG)
    return sandbox


def shares_of(sandbox: Sandbox, tag: str = TAG) -> str:
    return f"/v1/capsules/{sandbox.pk}/pty/{tag}/shares"


def error(response: Any) -> tuple[str, str]:
    body = response.json()["error"]
    return body["code"], body["message"]


def test_a_link_is_issued_with_its_token_once(team_client: ContractClient, running: Sandbox) -> None:
    response = team_client.post(shares_of(running), {"mode": "observer", "expires_in": 600}, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["token"].startswith("wrs_")
    assert body["url"] == f"http://testserver/shared/{body['token']}/"
    assert (body["tag"], body["mode"], body["status"]) == (TAG, "observer", "active")
    link = ShareLink.objects.get(pk=body["id"])
    assert link.token_hash == hash_token(body["token"])  # the token itself is not kept
    assert 590 <= (link.expires_at - link.created_at).total_seconds() <= 600
    listed = team_client.get(shares_of(running)).json()
    assert [item["id"] for item in listed] == [body["id"]]
    assert "token" not in listed[0]
    assert "url" not in listed[0]


def test_a_link_lasts_the_default_hour_and_observes_when_not_told(
    key_client: ContractClient, running: Sandbox
) -> None:
    body = key_client.post(shares_of(running), {}, format="json").json()
    link = ShareLink.objects.get(pk=body["id"])
    assert 3590 <= (link.expires_at - link.created_at).total_seconds() <= 3600
    assert link.mode == "observer"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"mode": "peer"}, f"mode: {PEER_REFUSED}"),
        ({"mode": "moderator"}, "mode: must be 'observer'"),
        ({"mode": 1}, "mode: must be a string"),
        ({"expires_in": "3600"}, "expires_in: must be an integer"),
        ({"expires_in": 1.5}, "expires_in: must be an integer"),
        ({"expires_in": True}, "expires_in: must be an integer"),
        ({"expires_in": 59}, "expires_in: must be at least 60 seconds"),
        ({"expires_in": 86401}, "expires_in: must be at most 86400 seconds"),
        ({"port": 3000}, "unknown field 'port'"),
    ],
)
def test_bad_requests_get_their_own_error(
    key_client: ContractClient, running: Sandbox, body: dict[str, Any], message: str
) -> None:
    response = key_client.post(shares_of(running), body, format="json")
    assert response.status_code == 400, response.content
    assert error(response) == ("invalid_request", message)
    assert not ShareLink.objects.exists()


def test_a_missing_or_ended_session_is_404(key_client: ContractClient, running: Sandbox) -> None:
    response = key_client.post(shares_of(running, "pty-00000000"), {}, format="json")
    assert response.status_code == 404
    assert error(response) == ("not_found", "terminal session pty-00000000 not found (or it has ended)")
    TerminalSession.objects.filter(sandbox=running, tag=TAG).update(ended_at=timezone.now())
    response = key_client.post(shares_of(running), {}, format="json")
    assert error(response) == ("not_found", f"terminal session {TAG} not found (or it has ended)")
    response = key_client.post(shares_of(running, "not a tag!"), {}, format="json")
    assert error(response) == ("not_found", "terminal session not a tag! not found")
    assert not ShareLink.objects.exists()


def test_another_teams_capsule_is_a_missing_one(key_client: ContractClient, theirs: Sandbox) -> None:
    for response in (
        key_client.post(shares_of(theirs), {}, format="json"),
        key_client.get(shares_of(theirs)),
        key_client.delete(f"{shares_of(theirs)}/shr-0000000000000000"),
    ):
        assert response.status_code == 404
        assert error(response) == ("not_found", f"capsule {theirs.pk} not found")


def test_revoking_a_link_once_and_again(key_client: ContractClient, running: Sandbox) -> None:
    body = key_client.post(shares_of(running), {}, format="json").json()
    response = key_client.delete(f"{shares_of(running)}/{body['id']}")
    assert response.status_code == 204
    link = ShareLink.objects.get(pk=body["id"])
    assert link.revoked_at is not None
    assert link.revoked_by.startswith("key:wrn_")
    first = link.revoked_at
    assert key_client.delete(f"{shares_of(running)}/{body['id']}").status_code == 204
    link.refresh_from_db()
    assert link.revoked_at == first
    assert key_client.get(shares_of(running)).json()[0]["status"] == "revoked"
    assert AuditEvent.objects.filter(action="share.revoke").count() == 1


def test_a_share_id_of_another_session_is_404(key_client: ContractClient, running: Sandbox) -> None:
    TerminalSession.objects.create(sandbox=running, tag="pty-99999999")
    other = key_client.post(shares_of(running, "pty-99999999"), {}, format="json").json()
    response = key_client.delete(f"{shares_of(running)}/{other['id']}")
    assert response.status_code == 404
    assert error(response) == ("not_found", f"share link {other['id']} not found for session {TAG}")
    assert ShareLink.objects.get(pk=other["id"]).revoked_at is None
    assert key_client.get(shares_of(running)).json() == []


def test_an_observe_scoped_key_cannot_share(
    contract: Contract, key_client: ContractClient, team: Team, running: Sandbox
) -> None:
    made = key_client.post(shares_of(running), {}, format="json").json()
    key, raw = create_api_key(team, "watcher")
    key.scope = "terminal:observe"
    key.save()
    client = ContractClient(contract, HTTP_X_API_KEY=raw)
    for response in (
        client.post(shares_of(running), {}, format="json"),
        client.get(shares_of(running)),
        client.delete(f"{shares_of(running)}/{made['id']}"),
    ):
        assert response.status_code == 403
        assert error(response) == ("forbidden", OBSERVE_ONLY)
    assert ShareLink.objects.count() == 1
    assert ShareLink.objects.get().revoked_at is None


def test_a_share_token_opens_nothing_of_the_api(
    contract: Contract, key_client: ContractClient, running: Sandbox
) -> None:
    token = key_client.post(shares_of(running), {}, format="json").json()["token"]
    for headers in ({"HTTP_AUTHORIZATION": f"Bearer {token}"}, {"HTTP_X_API_KEY": token}):
        client = ContractClient(contract, **headers)
        for path in (shares_of(running), f"/v1/capsules/{running.pk}", "/v1/capsules"):
            response = client.get(path)
            assert response.status_code == 401, (headers, path, response.content)


def test_each_change_is_audited_with_its_actor(
    jwt_client: ContractClient, running: Sandbox, member: Any
) -> None:
    body = jwt_client.post(shares_of(running), {"expires_in": 120}, format="json").json()
    jwt_client.delete(f"{shares_of(running)}/{body['id']}")
    created, revoked = AuditEvent.objects.order_by("id").filter(action__startswith="share.")
    for event in (created, revoked):
        assert (event.actor_type, event.actor_label, event.user_id) == ("user", "user:alice", member.pk)
        assert (event.outcome, event.capsule_id, event.session_tag) == ("success", running.pk, TAG)
        assert event.team_id == running.team_id
        assert event.detail["share_id"] == body["id"]
    assert (created.action, revoked.action) == ("share.create", "share.revoke")
    assert created.detail["mode"] == "observer"


def test_an_expired_link_is_listed_as_expired(key_client: ContractClient, running: Sandbox) -> None:
    body = key_client.post(shares_of(running), {}, format="json").json()
    ShareLink.objects.filter(pk=body["id"]).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert key_client.get(shares_of(running)).json()[0]["status"] == "expired"
