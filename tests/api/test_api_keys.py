"""API keys: created with the raw key shown once, listed without secrets, revoked; per team.

Revoked keys are left out of the list, and revoking one again answers 404.
"""

from typing import Any

import pytest

from capsules.keys import hash_key, revoke_api_keys
from capsules.models import APIKey, Team
from tests.api import error, iso
from tests.api.contract import ContractClient

KEYS = "/v1/api-keys"


def key_json(api_key: APIKey) -> dict[str, Any]:
    api_key.refresh_from_db()
    return {
        "id": api_key.pk,
        "name": api_key.name,
        "prefix": api_key.prefix,
        "scope": api_key.scope,
        "created_at": iso(api_key.created_at),
        "last_used": iso(api_key.last_used),
    }


def test_create_answers_201_with_the_raw_key(team_client: ContractClient, team: Team) -> None:
    response = team_client.post(KEYS, {"name": "deploy"}, format="json")
    assert response.status_code == 201
    body = response.json()
    api_key = APIKey.objects.get(pk=body["id"])
    assert body == {**key_json(api_key), "key": body["key"]}
    assert (api_key.team, api_key.name, api_key.key_hash) == (team, "deploy", hash_key(body["key"]))
    assert body["key"].startswith(body["prefix"])


def test_created_key_works(key_client: ContractClient, client: ContractClient) -> None:
    raw_key = key_client.post(KEYS, {"name": "deploy"}, format="json").json()["key"]
    assert client.get("/v1/capsules", HTTP_X_API_KEY=raw_key).status_code == 200


def test_create_records_the_user_behind_a_token(jwt_client: ContractClient, member: Any) -> None:
    key_id = jwt_client.post(KEYS, {"name": "deploy"}, format="json").json()["id"]
    assert APIKey.objects.get(pk=key_id).created_by == member


def test_create_by_an_api_key_has_no_creator(key_client: ContractClient) -> None:
    key_id = key_client.post(KEYS, {"name": "deploy"}, format="json").json()["id"]
    assert APIKey.objects.get(pk=key_id).created_by is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "name: is required"),
        ({"name": ""}, "name: must not be empty"),
        ({"name": 7}, "name: must be a string"),
        ({"name": "x" * 201}, "name: must be at most 200 characters"),
        ({"name": "ci", "team": "globex"}, "unknown field 'team'"),
    ],
)
def test_create_rejects_a_bad_body(key_client: ContractClient, body: dict[str, Any], message: str) -> None:
    response = key_client.post(KEYS, body, format="json")
    assert response.status_code == 400
    assert response.json() == error("invalid_request", message)


def test_list_answers_the_teams_live_keys_newest_first(team_client: ContractClient, team: Team) -> None:
    team_client.post(KEYS, {"name": "second"}, format="json")
    keys = list(APIKey.objects.filter(team=team).order_by("-created_at", "-pk"))
    response = team_client.get(KEYS)
    assert response.status_code == 200
    assert response.json() == [key_json(api_key) for api_key in keys]


def test_list_never_shows_a_key_or_its_hash(key_client: ContractClient) -> None:
    (listed,) = key_client.get(KEYS).json()
    assert set(listed) == {"id", "name", "prefix", "scope", "created_at", "last_used"}


def test_list_shows_when_a_key_was_last_used(key_client: ContractClient) -> None:
    (listed,) = key_client.get(KEYS).json()
    assert listed["last_used"] is not None


def test_list_leaves_out_revoked_keys(key_client: ContractClient, team: Team) -> None:
    created = key_client.post(KEYS, {"name": "old"}, format="json").json()
    revoke_api_keys(APIKey.objects.filter(pk=created["id"]))
    assert created["id"] not in [listed["id"] for listed in key_client.get(KEYS).json()]


def test_list_leaves_out_other_teams(
    key_client: ContractClient, other_api_key: str, other_team: Team
) -> None:
    listed = {api_key["id"] for api_key in key_client.get(KEYS).json()}
    assert not listed & set(APIKey.objects.filter(team=other_team).values_list("pk", flat=True))


def test_delete_answers_204_and_revokes(key_client: ContractClient, client: ContractClient) -> None:
    created = key_client.post(KEYS, {"name": "old"}, format="json").json()
    response = key_client.delete(f"{KEYS}/{created['id']}")
    assert response.status_code == 204
    assert response.content == b""
    assert APIKey.objects.get(pk=created["id"]).revoked_at is not None
    assert client.get("/v1/capsules", HTTP_X_API_KEY=created["key"]).status_code == 401


def test_delete_an_already_revoked_key(key_client: ContractClient) -> None:
    created = key_client.post(KEYS, {"name": "old"}, format="json").json()
    key_client.delete(f"{KEYS}/{created['id']}")
    response = key_client.delete(f"{KEYS}/{created['id']}")
    assert response.status_code == 404
    assert response.json() == error("not_found", f"API key {created['id']} not found")


def test_delete_another_teams_key_is_not_found(
    team_client: ContractClient, other_api_key: str, other_team: Team
) -> None:
    theirs = APIKey.objects.get(team=other_team)
    response = team_client.delete(f"{KEYS}/{theirs.pk}")
    assert response.status_code == 404
    assert response.json() == error("not_found", f"API key {theirs.pk} not found")
    theirs.refresh_from_db()
    assert theirs.revoked_at is None


def test_delete_a_missing_key(key_client: ContractClient) -> None:
    response = key_client.delete(f"{KEYS}/999999")
    assert response.status_code == 404
    assert response.json() == error("not_found", "API key 999999 not found")


def test_delete_with_an_id_that_is_not_a_number(key_client: ContractClient) -> None:
    response = key_client.delete(f"{KEYS}/abc")
    assert response.status_code == 404
    assert response.json() == error("not_found", f"unknown endpoint {KEYS}/abc")


@pytest.mark.parametrize(("method", "path"), [("get", KEYS), ("post", KEYS), ("delete", f"{KEYS}/1")])
def test_keys_need_credentials(client: ContractClient, db: None, method: str, path: str) -> None:
    response = getattr(client, method)(path)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
