"""Signing in with email and password, refreshing the access token, and switching teams."""

from typing import Any

import pytest
from rest_framework_simplejwt.tokens import AccessToken

from capsules.models import Membership, Team
from capsules.tokens import tokens_for
from tests.api import error
from tests.api.contract import ContractClient
from tests.capsules import MEMBER_PASSWORD

LOGIN = "/v1/auth/login"
REFRESH = "/v1/auth/refresh"
SWITCH = "/v1/auth/switch-team"
BAD_LOGIN = error("unauthorized", "invalid email or password")


def login(client: ContractClient, body: Any) -> Any:
    return client.post(LOGIN, body, format="json")


# Login


def test_login_answers_tokens_for_the_default_team(client: ContractClient, member: Any, team: Team) -> None:
    response = login(client, {"email": "alice@example.com", "password": MEMBER_PASSWORD})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"access", "refresh", "team_id", "user"}
    assert body["team_id"] == str(team.id)
    assert body["user"] == {"id": member.pk, "email": "alice@example.com", "username": "alice"}
    assert AccessToken(body["access"])["team_id"] == str(team.id)


def test_login_tokens_call_the_api(client: ContractClient, member: Any, team: Team) -> None:
    access = login(client, {"email": "alice@example.com", "password": MEMBER_PASSWORD}).json()["access"]
    assert client.get("/v1/capsules", HTTP_AUTHORIZATION=f"Bearer {access}").status_code == 200


def test_login_email_is_case_insensitive(client: ContractClient, member: Any) -> None:
    assert login(client, {"email": "ALICE@example.com", "password": MEMBER_PASSWORD}).status_code == 200


def test_login_with_a_wrong_password(client: ContractClient, member: Any) -> None:
    response = login(client, {"email": "alice@example.com", "password": "wrong"})
    assert response.status_code == 401
    assert response.json() == BAD_LOGIN


def test_login_with_an_unknown_email(client: ContractClient, member: Any) -> None:
    response = login(client, {"email": "bob@example.com", "password": MEMBER_PASSWORD})
    assert response.status_code == 401
    assert response.json() == BAD_LOGIN


def test_login_of_an_inactive_user(client: ContractClient, member: Any) -> None:
    member.is_active = False
    member.save()
    response = login(client, {"email": "alice@example.com", "password": MEMBER_PASSWORD})
    assert response.status_code == 401
    assert response.json() == BAD_LOGIN


def test_login_of_a_user_without_a_team(client: ContractClient, member: Any) -> None:
    Membership.objects.filter(user=member).delete()
    response = login(client, {"email": "alice@example.com", "password": MEMBER_PASSWORD})
    assert response.status_code == 403
    assert response.json() == error("forbidden", "not a member of any team")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"email": "alice@example.com"}, "password: is required"),
        ({"email": 1, "password": "x"}, "email: must be a string"),
        ({"username": "alice", "password": "x"}, "unknown field 'username'"),
    ],
)
def test_login_rejects_a_bad_body(
    client: ContractClient, db: None, body: dict[str, Any], message: str
) -> None:
    response = login(client, body)
    assert response.status_code == 400
    assert response.json() == error("invalid_request", message)


def test_login_ignores_stale_credentials(client: ContractClient, member: Any) -> None:
    response = client.post(
        LOGIN,
        {"email": "alice@example.com", "password": MEMBER_PASSWORD},
        format="json",
        HTTP_AUTHORIZATION="Bearer expired.garbage",
    )
    assert response.status_code == 200


# Refresh


def test_refresh_answers_a_new_access_token(client: ContractClient, member: Any, team: Team) -> None:
    response = client.post(REFRESH, {"refresh": tokens_for(member, team)["refresh"]}, format="json")
    assert response.status_code == 200
    assert set(response.json()) == {"access", "team_id"}
    assert AccessToken(response.json()["access"])["team_id"] == str(team.id)


def test_refresh_with_a_bad_token(client: ContractClient, db: None) -> None:
    response = client.post(REFRESH, {"refresh": "garbage"}, format="json")
    assert response.status_code == 401
    assert response.json() == error("unauthorized", "invalid or expired refresh token")


def test_refresh_after_leaving_the_team(client: ContractClient, member: Any, team: Team) -> None:
    refresh = tokens_for(member, team)["refresh"]
    Membership.objects.filter(user=member).delete()
    response = client.post(REFRESH, {"refresh": refresh}, format="json")
    assert response.status_code == 403
    assert response.json() == error("forbidden", f"not a member of team {team.id}")


def test_refresh_is_also_at_the_token_path(client: ContractClient, member: Any, team: Team) -> None:
    body = {"refresh": tokens_for(member, team)["refresh"]}
    assert client.post("/v1/auth/token/refresh", body, format="json").status_code == 200


# Switch team


def test_switch_team_answers_tokens_for_the_other_team(
    jwt_client: ContractClient, member: Any, other_team: Team
) -> None:
    Membership.objects.create(user=member, team=other_team)
    response = jwt_client.post(SWITCH, {"team_id": str(other_team.id)}, format="json")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"access", "refresh", "team_id"}
    assert body["team_id"] == str(other_team.id)
    assert AccessToken(body["access"])["team_id"] == str(other_team.id)


def test_switched_tokens_reach_the_other_teams_capsules(
    jwt_client: ContractClient, member: Any, other_team: Team, other_capsule: Any
) -> None:
    Membership.objects.create(user=member, team=other_team)
    access = jwt_client.post(SWITCH, {"team_id": str(other_team.id)}, format="json").json()["access"]
    response = jwt_client.get(f"/v1/capsules/{other_capsule.id}", HTTP_AUTHORIZATION=f"Bearer {access}")
    assert response.status_code == 200


def test_switch_to_a_team_of_someone_else(jwt_client: ContractClient, other_team: Team) -> None:
    response = jwt_client.post(SWITCH, {"team_id": str(other_team.id)}, format="json")
    assert response.status_code == 403
    assert response.json() == error("forbidden", f"not a member of team {other_team.id}")


def test_switch_to_a_team_that_does_not_exist(jwt_client: ContractClient) -> None:
    team_id = "00000000-0000-0000-0000-000000000000"
    response = jwt_client.post(SWITCH, {"team_id": team_id}, format="json")
    assert response.status_code == 403
    assert response.json() == error("forbidden", f"not a member of team {team_id}")


def test_switch_with_an_api_key(key_client: ContractClient, other_team: Team) -> None:
    response = key_client.post(SWITCH, {"team_id": str(other_team.id)}, format="json")
    assert response.status_code == 403
    assert response.json() == error(
        "forbidden", "switching teams needs a user's access token (Authorization: Bearer), not an API key"
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "team_id: is required"),
        ({"team_id": "acme"}, "team_id: must be a UUID string"),
        ({"team_id": 5}, "team_id: must be a UUID string"),
        ({"team_id": None}, "team_id: must not be null"),
    ],
)
def test_switch_rejects_a_bad_body(jwt_client: ContractClient, body: dict[str, Any], message: str) -> None:
    response = jwt_client.post(SWITCH, body, format="json")
    assert response.status_code == 400
    assert response.json() == error("invalid_request", message)


def test_switch_needs_credentials(client: ContractClient, other_team: Team) -> None:
    response = client.post(SWITCH, {"team_id": str(other_team.id)}, format="json")
    assert response.status_code == 401
