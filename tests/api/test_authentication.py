"""Who may call: an API key, or a bearer access token for one of the user's teams; every refusal says why."""

from datetime import timedelta
from typing import Any

import pytest
from rest_framework_simplejwt.tokens import AccessToken

from capsules.api.authentication import bearer_token
from capsules.keys import revoke_api_keys
from capsules.models import APIKey, Membership, Team
from capsules.tokens import tokens_for
from tests.api import error
from tests.api.contract import ContractClient

CAPSULES = "/v1/capsules"


def unauthorized(message: str) -> dict[str, Any]:
    return error("unauthorized", message)


def bearer(client: ContractClient, token: str) -> Any:
    return client.get(CAPSULES, HTTP_AUTHORIZATION=f"Bearer {token}")


def access_token(user: Any, team: Team) -> AccessToken:
    return AccessToken(tokens_for(user, team)["access"])  # type: ignore[arg-type]


def test_api_key_is_accepted(key_client: ContractClient) -> None:
    assert key_client.get(CAPSULES).status_code == 200


def test_api_key_records_last_used(key_client: ContractClient, team: Team) -> None:
    key_client.get(CAPSULES)
    assert APIKey.objects.get(team=team).last_used is not None


def test_bearer_token_is_accepted(jwt_client: ContractClient) -> None:
    assert jwt_client.get(CAPSULES).status_code == 200


def test_missing_credentials(client: ContractClient, db: None) -> None:
    response = client.get(CAPSULES)
    assert response.status_code == 401
    assert response.json() == unauthorized("missing credentials: send X-API-Key or Authorization: Bearer")


def test_unauthorized_names_the_schemes(client: ContractClient, db: None) -> None:
    assert client.get(CAPSULES)["WWW-Authenticate"] == 'Bearer realm="api", ApiKey realm="api"'


def test_unknown_api_key(client: ContractClient, db: None) -> None:
    response = client.get(CAPSULES, HTTP_X_API_KEY="wrn_" + "0" * 40)
    assert response.status_code == 401
    assert response.json() == unauthorized("invalid API key")


def test_malformed_api_key(client: ContractClient, db: None) -> None:
    response = client.get(CAPSULES, HTTP_X_API_KEY="not-a-key")
    assert response.status_code == 401
    assert response.json() == unauthorized("invalid API key")


def test_revoked_api_key(key_client: ContractClient, team: Team) -> None:
    revoke_api_keys(APIKey.objects.filter(team=team))
    response = key_client.get(CAPSULES)
    assert response.status_code == 401
    assert response.json() == unauthorized("invalid API key")


def test_expired_token(client: ContractClient, member: Any, team: Team) -> None:
    token = access_token(member, team)
    token.set_exp(lifetime=-timedelta(seconds=1))
    response = bearer(client, str(token))
    assert response.status_code == 401
    assert response.json() == unauthorized("token is expired")


def test_garbage_token(client: ContractClient, db: None) -> None:
    response = bearer(client, "not.a.token")
    assert response.status_code == 401
    assert response.json() == unauthorized("token is invalid")


def test_refresh_token_is_not_an_access_token(client: ContractClient, member: Any, team: Team) -> None:
    response = bearer(client, tokens_for(member, team)["refresh"])
    assert response.status_code == 401
    assert response.json() == unauthorized("token has wrong type")


def test_token_for_a_team_the_user_left(client: ContractClient, member: Any, team: Team) -> None:
    token = tokens_for(member, team)["access"]
    Membership.objects.filter(user=member, team=team).delete()
    response = bearer(client, token)
    assert response.status_code == 401
    assert response.json() == unauthorized("not a member of the token's team")


def test_token_naming_another_team(client: ContractClient, member: Any, other_team: Team) -> None:
    token = access_token(member, other_team)
    response = bearer(client, str(token))
    assert response.status_code == 401
    assert response.json() == unauthorized("not a member of the token's team")


def test_token_without_team(client: ContractClient, member: Any, team: Team) -> None:
    token = access_token(member, team)
    del token["team_id"]
    response = bearer(client, str(token))
    assert response.status_code == 401
    assert response.json() == unauthorized("token has no team")


def test_token_of_an_inactive_user(client: ContractClient, member: Any, team: Team) -> None:
    token = tokens_for(member, team)["access"]
    member.is_active = False
    member.save()
    response = bearer(client, token)
    assert response.status_code == 401
    assert response.json() == unauthorized("user is inactive")


def test_token_of_a_deleted_user(client: ContractClient, member: Any, team: Team) -> None:
    token = tokens_for(member, team)["access"]
    member.delete()
    response = bearer(client, token)
    assert response.status_code == 401
    assert response.json() == unauthorized("user not found")


@pytest.mark.parametrize("header", ["Basic YWxpY2U6c2VjcmV0", "Bearer", "Token abc"])
def test_authorization_that_is_not_bearer(client: ContractClient, db: None, header: str) -> None:
    response = client.get(CAPSULES, HTTP_AUTHORIZATION=header)
    assert response.status_code == 401
    assert response.json() == unauthorized("Authorization must be 'Bearer <token>'")


def test_api_key_is_checked_before_a_bearer_token(
    client: ContractClient, api_key: str, member: Any, team: Team
) -> None:
    response = client.get(
        CAPSULES,
        HTTP_X_API_KEY="wrn_" + "0" * 40,
        HTTP_AUTHORIZATION=f"Bearer {tokens_for(member, team)['access']}",
    )
    assert response.status_code == 401
    assert response.json() == unauthorized("invalid API key")


def test_api_prefix_authenticates_the_same(key_client: ContractClient) -> None:
    assert key_client.get("/api" + CAPSULES).status_code == 200


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc", "abc"),
        ("bearer abc", "abc"),
        ("BEARER  abc  ", "abc"),
        (" Bearer abc", "abc"),
        ("Bearer", None),
        ("Bearer   ", None),
        ("Basic abc", None),
        ("abc", None),
        ("", None),
    ],
)
def test_one_reading_of_the_authorization_header(header: str, token: str | None) -> None:
    assert bearer_token(header) == token
