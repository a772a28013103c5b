"""The token endpoints: obtain a team-scoped pair, refresh it, and every error in one shape."""

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken

from capsules.models import Membership, Team
from capsules.tokens import tokens_for
from tests.capsules import MEMBER_PASSWORD

UNAUTHORIZED = {"error": {"code": "unauthorized", "message": "invalid username or password"}}
BAD_REFRESH = {"error": {"code": "unauthorized", "message": "invalid or expired refresh token"}}


@pytest.fixture
def client() -> APIClient:
    return APIClient()


def obtain(client: APIClient, body: Any, **kwargs: Any) -> Any:
    return client.post(reverse("token-obtain"), body, format="json", **kwargs)


def refresh(client: APIClient, body: Any) -> Any:
    return client.post(reverse("token-refresh"), body, format="json")


def test_routes_are_served_under_v1_and_api_v1() -> None:
    assert reverse("token-obtain") in {"/v1/auth/token", "/api/v1/auth/token"}


def test_obtain_returns_a_pair_for_the_default_team(client: APIClient, member: Any, team: Team) -> None:
    response = obtain(client, {"username": "alice", "password": MEMBER_PASSWORD})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"access", "refresh", "team_id"}
    assert body["team_id"] == str(team.id)
    assert AccessToken(body["access"])["team_id"] == str(team.id)


def test_obtain_under_api_prefix(client: APIClient, member: Any, team: Team) -> None:
    response = client.post(
        "/api/v1/auth/token", {"username": "alice", "password": MEMBER_PASSWORD}, format="json"
    )
    assert response.status_code == 200


def test_obtain_for_an_explicit_team(client: APIClient, member: Any, other_team: Team) -> None:
    Membership.objects.create(user=member, team=other_team)
    response = obtain(client, {"username": "alice", "password": MEMBER_PASSWORD, "team": str(other_team.id)})
    assert response.status_code == 200
    assert response.json()["team_id"] == str(other_team.id)


def test_obtain_by_email(client: APIClient, member: Any, team: Team) -> None:
    response = obtain(client, {"email": "ALICE@example.com", "password": MEMBER_PASSWORD})
    assert response.status_code == 200
    assert response.json()["team_id"] == str(team.id)


def test_wrong_password_is_unauthorized(client: APIClient, member: Any) -> None:
    response = obtain(client, {"username": "alice", "password": "wrong"})
    assert response.status_code == 401
    assert response.json() == UNAUTHORIZED


def test_unknown_user_is_unauthorized(client: APIClient, db: None) -> None:
    response = obtain(client, {"username": "nobody", "password": "whatever"})
    assert response.status_code == 401
    assert response.json() == UNAUTHORIZED


def test_unknown_email_is_unauthorized(client: APIClient, member: Any) -> None:
    response = obtain(client, {"email": "nobody@example.com", "password": MEMBER_PASSWORD})
    assert response.status_code == 401
    assert response.json() == UNAUTHORIZED


def test_inactive_user_is_unauthorized(client: APIClient, member: Any) -> None:
    member.is_active = False
    member.save()
    response = obtain(client, {"username": "alice", "password": MEMBER_PASSWORD})
    assert response.status_code == 401
    assert response.json() == UNAUTHORIZED


def test_team_of_someone_else_is_forbidden(client: APIClient, member: Any, other_team: Team) -> None:
    response = obtain(client, {"username": "alice", "password": MEMBER_PASSWORD, "team": str(other_team.id)})
    assert response.status_code == 403
    assert response.json() == {
        "error": {"code": "forbidden", "message": f"not a member of team {other_team.id}"}
    }


def test_user_without_team_is_forbidden(client: APIClient, db: None) -> None:
    get_user_model().objects.create_user(username="loner", password=MEMBER_PASSWORD)
    response = obtain(client, {"username": "loner", "password": MEMBER_PASSWORD})
    assert response.status_code == 403
    assert response.json() == {"error": {"code": "forbidden", "message": "not a member of any team"}}


def test_missing_password_is_invalid_request(client: APIClient, db: None) -> None:
    response = obtain(client, {"username": "alice"})
    assert response.status_code == 400
    assert response.json() == {
        "error": {"code": "invalid_request", "message": "password: This field is required."}
    }


def test_missing_username_and_email_is_invalid_request(client: APIClient, db: None) -> None:
    response = obtain(client, {"password": "x"})
    assert response.status_code == 400
    assert response.json() == {
        "error": {"code": "invalid_request", "message": "username or email is required"}
    }


def test_malformed_team_is_invalid_request(client: APIClient, member: Any) -> None:
    response = obtain(client, {"username": "alice", "password": MEMBER_PASSWORD, "team": "acme"})
    assert response.status_code == 400
    assert response.json() == {"error": {"code": "invalid_request", "message": "team: Must be a valid UUID."}}


def test_malformed_json_is_invalid_request(client: APIClient, db: None) -> None:
    response = client.post(reverse("token-obtain"), "{not json", content_type="application/json")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert error["message"].startswith("JSON parse error")


def test_json_that_is_not_an_object_is_invalid_request(client: APIClient, db: None) -> None:
    response = obtain(client, ["alice", "secret"])
    assert response.status_code == 400
    assert response.json() == {
        "error": {"code": "invalid_request", "message": "Invalid data. Expected a dictionary, but got list."}
    }


def test_obtain_ignores_a_bad_authorization_header(client: APIClient, member: Any) -> None:
    response = obtain(
        client, {"username": "alice", "password": MEMBER_PASSWORD}, HTTP_AUTHORIZATION="Bearer garbage"
    )
    assert response.status_code == 200


def test_get_is_method_not_allowed(client: APIClient, db: None) -> None:
    response = client.get(reverse("token-obtain"))
    assert response.status_code == 405
    assert response.json() == {
        "error": {"code": "method_not_allowed", "message": 'Method "GET" not allowed.'}
    }


def test_refresh_returns_an_access_token_for_the_same_team(
    client: APIClient, member: Any, team: Team
) -> None:
    pair = tokens_for(member, team)
    response = refresh(client, {"refresh": pair["refresh"]})
    assert response.status_code == 200
    body = response.json()
    assert body["team_id"] == str(team.id)
    access = AccessToken(body["access"])
    assert access["team_id"] == str(team.id)
    assert access["user_id"] == str(member.pk)


def test_refresh_with_a_garbage_token_is_unauthorized(client: APIClient, db: None) -> None:
    response = refresh(client, {"refresh": "not.a.token"})
    assert response.status_code == 401
    assert response.json() == BAD_REFRESH


def test_refresh_with_an_access_token_is_unauthorized(client: APIClient, member: Any, team: Team) -> None:
    response = refresh(client, {"refresh": tokens_for(member, team)["access"]})
    assert response.status_code == 401
    assert response.json() == BAD_REFRESH


def test_refresh_with_an_expired_token_is_unauthorized(client: APIClient, member: Any, team: Team) -> None:
    token = RefreshToken.for_user(member)
    token["team_id"] = str(team.id)
    token.set_exp(lifetime=-timedelta(seconds=1))
    response = refresh(client, {"refresh": str(token)})
    assert response.status_code == 401
    assert response.json() == BAD_REFRESH


def test_refresh_for_an_inactive_user_is_unauthorized(client: APIClient, member: Any, team: Team) -> None:
    pair = tokens_for(member, team)
    member.is_active = False
    member.save()
    response = refresh(client, {"refresh": pair["refresh"]})
    assert response.status_code == 401
    assert response.json() == BAD_REFRESH


def test_refresh_after_leaving_the_team_is_forbidden(client: APIClient, member: Any, team: Team) -> None:
    pair = tokens_for(member, team)
    Membership.objects.filter(user=member).delete()
    response = refresh(client, {"refresh": pair["refresh"]})
    assert response.status_code == 403
    assert response.json() == {"error": {"code": "forbidden", "message": f"not a member of team {team.id}"}}


def test_refresh_without_token_is_invalid_request(client: APIClient, db: None) -> None:
    response = refresh(client, {})
    assert response.status_code == 400
    assert response.json() == {
        "error": {"code": "invalid_request", "message": "refresh: This field is required."}
    }
