"""API keys on the audit trail and their scopes through the API: creating and revoking a key
leaves an event with who did it; a key is `full` or `terminal:observe`, and lists say which."""

from __future__ import annotations

from typing import Any

import pytest

from audit.models import AuditEvent
from capsules.models import APIKey, Team
from tests.api import error
from tests.api.contract import ContractClient

KEYS = "/v1/api-keys"
ADDRESS = "192.0.2.55"


def key_events(team: Team) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(team=team, action__startswith="api_key.").order_by("pk"))


def test_a_key_is_full_by_default(key_client: ContractClient) -> None:
    body = key_client.post(KEYS, {"name": "deploy"}, format="json").json()
    assert body["scope"] == "full"
    assert APIKey.objects.get(pk=body["id"]).scope == "full"


def test_an_observe_key_is_made_and_listed_with_its_scope(key_client: ContractClient) -> None:
    response = key_client.post(KEYS, {"name": "watcher", "scope": "terminal:observe"}, format="json")
    assert response.status_code == 201
    assert response.json()["scope"] == "terminal:observe"
    listed = {item["name"]: item["scope"] for item in key_client.get(KEYS).json()}
    assert listed == {"watcher": "terminal:observe", "ci": "full"}


@pytest.mark.parametrize("scope", ["admin", "", "Terminal:Observe", 3, None, ["full"]])
def test_an_unknown_scope_is_refused_naming_the_allowed_ones(key_client: ContractClient, scope: Any) -> None:
    response = key_client.post(KEYS, {"name": "x", "scope": scope}, format="json")
    assert response.status_code == 400
    shown = "null" if scope is None else repr(scope)
    assert response.json() == error(
        "invalid_request", f"scope: {shown} is not a scope: use one of 'full', 'terminal:observe'"
    )
    assert not APIKey.objects.filter(name="x").exists()


def test_creating_a_key_is_recorded(jwt_client: ContractClient, team: Team, member: Any) -> None:
    body = jwt_client.post(
        KEYS, {"name": "watcher", "scope": "terminal:observe"}, format="json", REMOTE_ADDR=ADDRESS
    ).json()
    (event,) = key_events(team)
    assert (event.action, event.outcome, event.actor_label, event.user_id) == (
        "api_key.create",
        "success",
        "user:alice",
        member.pk,
    )
    assert event.client_address == ADDRESS
    assert event.detail == {
        "key_id": body["id"],
        "prefix": body["prefix"],
        "name": "watcher",
        "scope": "terminal:observe",
    }
    assert body["key"] not in str(event.detail)


def test_revoking_a_key_is_recorded(key_client: ContractClient, team: Team) -> None:
    body = key_client.post(KEYS, {"name": "old"}, format="json").json()
    assert key_client.delete(f"{KEYS}/{body['id']}", REMOTE_ADDR=ADDRESS).status_code == 204
    made_by_fixture, created, revoked = key_events(team)
    ci = APIKey.objects.get(team=team, name="ci")
    assert (made_by_fixture.action, made_by_fixture.actor_type) == ("api_key.create", "system")
    assert (created.action, created.actor_label) == ("api_key.create", f"key:{ci.prefix}")
    assert (revoked.action, revoked.outcome, revoked.actor_label, revoked.api_key_id) == (
        "api_key.revoke",
        "success",
        f"key:{ci.prefix}",
        ci.pk,
    )
    assert (revoked.detail["key_id"], revoked.client_address) == (body["id"], ADDRESS)


def test_revoking_a_missing_key_records_nothing(key_client: ContractClient, team: Team) -> None:
    before = key_events(team)
    assert key_client.delete(f"{KEYS}/999999").status_code == 404
    assert key_events(team) == before
