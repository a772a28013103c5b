"""Every refused authentication leaves an `auth.failed` event with its reason and what was tried,
and never a password or a token: API keys, bearer tokens, refresh tokens, the API's sign-in
endpoints, the admin's login page and the sign-in limits."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from pytest_django import Settings
from rest_framework_simplejwt.tokens import AccessToken

from audit.models import AuditEvent
from capsules.keys import create_api_key, revoke_api_keys
from capsules.models import APIKey, Membership, Team
from capsules.tokens import tokens_for
from tests.api.contract import ContractClient
from tests.capsules import MEMBER_PASSWORD

CAPSULES = "/v1/capsules"
ADDRESS = "203.0.113.7"


def failures() -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action="auth.failed").order_by("pk"))


def only_failure() -> AuditEvent:
    (event,) = failures()
    assert event.outcome == "failure"
    assert event.client_address == ADDRESS
    return event


def nothing_secret_in(event: AuditEvent, *secrets: str) -> None:
    stored = json.dumps([event.reason, event.actor_label, event.detail, event.origin])
    for secret in secrets:
        assert secret not in stored


# API keys


def test_an_unknown_key_is_recorded_without_any_of_it(client: ContractClient, db: None) -> None:
    raw_key = "wrn_" + "ab" * 20
    assert client.get(CAPSULES, HTTP_X_API_KEY=raw_key, REMOTE_ADDR=ADDRESS).status_code == 401
    event = only_failure()
    assert (event.reason, event.actor_type, event.team_id) == (
        "unknown or malformed API key",
        "anonymous",
        None,
    )
    assert event.detail == {"credential": "api_key", "path": CAPSULES}
    nothing_secret_in(event, raw_key, raw_key[:12])


def test_a_malformed_key_is_recorded(client: ContractClient, db: None) -> None:
    assert client.get(CAPSULES, HTTP_X_API_KEY="not-a-key", REMOTE_ADDR=ADDRESS).status_code == 401
    assert only_failure().reason == "unknown or malformed API key"


def test_a_revoked_key_is_named_in_its_teams_trail(client: ContractClient, team: Team) -> None:
    api_key, raw_key = create_api_key(team, "old")
    revoke_api_keys(APIKey.objects.filter(pk=api_key.pk))
    assert client.get(CAPSULES, HTTP_X_API_KEY=raw_key, REMOTE_ADDR=ADDRESS).status_code == 401
    event = only_failure()
    assert (event.reason, event.actor_type, event.actor_label) == (
        "revoked API key",
        "api_key",
        f"key:{api_key.prefix}",
    )
    assert (event.team_id, event.api_key_id, event.detail["prefix"]) == (team.pk, api_key.pk, api_key.prefix)
    nothing_secret_in(event, raw_key)


# Bearer tokens


def bearer(client: ContractClient, token: str) -> Any:
    return client.get(CAPSULES, HTTP_AUTHORIZATION=f"Bearer {token}", REMOTE_ADDR=ADDRESS)


def test_an_expired_token_is_recorded(client: ContractClient, member: Any, team: Team) -> None:
    token = AccessToken(tokens_for(member, team)["access"])  # type: ignore[arg-type]
    token.set_exp(lifetime=-timedelta(seconds=1))
    assert bearer(client, str(token)).status_code == 401
    event = only_failure()
    assert (event.reason, event.detail["credential"], event.actor_type) == (
        "token is expired",
        "access_token",
        "anonymous",
    )
    nothing_secret_in(event, str(token))


def test_a_garbage_token_is_recorded(client: ContractClient, db: None) -> None:
    assert bearer(client, "not.a.token").status_code == 401
    assert only_failure().reason == "token is invalid"


def test_a_bad_authorization_header_is_recorded(client: ContractClient, db: None) -> None:
    assert client.get(CAPSULES, HTTP_AUTHORIZATION="Basic abc", REMOTE_ADDR=ADDRESS).status_code == 401
    assert only_failure().reason == "Authorization must be 'Bearer <token>'"


def test_a_former_members_token_names_the_user_and_the_team(
    client: ContractClient, member: Any, team: Team
) -> None:
    access = tokens_for(member, team)["access"]
    Membership.objects.filter(user=member).delete()
    assert bearer(client, access).status_code == 401
    event = only_failure()
    assert (event.reason, event.actor_label, event.user_id, event.team_id) == (
        "not a member of the token's team",
        "user:alice",
        member.pk,
        team.pk,
    )


def test_an_inactive_users_token_is_recorded(client: ContractClient, member: Any, team: Team) -> None:
    access = tokens_for(member, team)["access"]
    member.is_active = False
    member.save()
    assert bearer(client, access).status_code == 401
    assert (only_failure().reason, only_failure().user_id) == ("user is inactive", member.pk)


def test_a_bad_refresh_token_is_recorded(client: ContractClient, db: None) -> None:
    response = client.post("/v1/auth/token/refresh", {"refresh": "nope"}, format="json", REMOTE_ADDR=ADDRESS)
    assert response.status_code == 401
    event = only_failure()
    assert (event.reason, event.detail["credential"]) == ("token is invalid", "refresh_token")


def test_accepted_credentials_leave_nothing(key_client: ContractClient, jwt_client: ContractClient) -> None:
    assert key_client.get(CAPSULES).status_code == 200
    assert jwt_client.get(CAPSULES).status_code == 200
    assert failures() == []


# Passwords


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/auth/login", {"email": "alice@example.com", "password": "wrong-pw-123"}),
        ("/v1/auth/token", {"username": "alice", "password": "wrong-pw-123"}),
        ("/v1/auth/token", {"email": "alice@example.com", "password": "wrong-pw-123"}),
    ],
)
def test_a_wrong_password_at_the_api_is_recorded_with_the_username(
    client: ContractClient, member: Any, path: str, body: dict[str, str]
) -> None:
    assert client.post(path, body, format="json", REMOTE_ADDR=ADDRESS).status_code == 401
    event = only_failure()
    assert (event.reason, event.team_id) == ("wrong password", None)
    assert event.detail == {"credential": "password", "path": path, "username": "alice"}
    nothing_secret_in(event, "wrong-pw-123")


def test_an_unknown_user_and_an_unknown_email_are_told_apart(client: ContractClient, db: None) -> None:
    client.post(
        "/v1/auth/token", {"username": "mallory", "password": "x"}, format="json", REMOTE_ADDR=ADDRESS
    )
    client.post(
        "/v1/auth/login", {"email": "m@example.com", "password": "x"}, format="json", REMOTE_ADDR=ADDRESS
    )
    first, second = failures()
    assert (first.reason, first.detail["username"]) == ("unknown user", "mallory")
    assert (second.reason, second.detail["email"]) == ("unknown email", "m@example.com")


def test_an_inactive_users_password_is_recorded(client: ContractClient, member: Any) -> None:
    member.is_active = False
    member.save()
    body = {"username": "alice", "password": MEMBER_PASSWORD}
    assert client.post("/v1/auth/token", body, format="json", REMOTE_ADDR=ADDRESS).status_code == 401
    assert only_failure().reason == "inactive user"


def test_a_right_password_leaves_nothing(client: ContractClient, member: Any) -> None:
    body = {"email": "alice@example.com", "password": MEMBER_PASSWORD}
    assert client.post("/v1/auth/login", body, format="json").status_code == 200
    assert failures() == []


def test_a_wrong_password_at_the_admin_login_is_recorded(django_user_model: Any) -> None:
    django_user_model.objects.create_user(username="root", password="root-password-1", is_staff=True)
    data = {"username": "root", "password": "wrong-pw-123"}
    assert Client().post("/admin/login/", data, REMOTE_ADDR=ADDRESS).status_code == 200
    event = only_failure()
    assert (event.reason, event.detail) == (
        "wrong password",
        {"credential": "password", "path": "/admin/login/", "username": "root"},
    )
    nothing_secret_in(event, "wrong-pw-123")


# Sign-in limits


def test_a_rate_limited_sign_in_is_recorded(client: ContractClient, member: Any, settings: Settings) -> None:
    settings.WRENN_LOGIN_RATE = "1/hour"
    body = {"email": "alice@example.com", "password": "wrong-pw-123"}
    client.post("/v1/auth/login", body, format="json", REMOTE_ADDR=ADDRESS)
    assert client.post("/v1/auth/login", body, format="json", REMOTE_ADDR=ADDRESS).status_code == 429
    wrong, limited = failures()
    assert wrong.reason == "wrong password"
    assert limited.reason.startswith("too many sign-in attempts for this account; try again in ")
    assert limited.detail == {
        "credential": "password",
        "path": "/v1/auth/login",
        "rate_limited": True,
        "email": "alice@example.com",
    }


def test_a_rate_limited_admin_sign_in_is_recorded(django_user_model: Any, settings: Settings) -> None:
    settings.WRENN_LOGIN_ADDRESS_RATE = "1/hour"
    client = Client()
    client.post("/admin/login/", {"username": "a", "password": "x"}, REMOTE_ADDR=ADDRESS)
    response = client.post("/admin/login/", {"username": "b", "password": "x"}, REMOTE_ADDR=ADDRESS)
    assert response.status_code == 429
    limited = failures()[-1]
    assert limited.reason.startswith("too many sign-in attempts from this address")
    assert limited.detail["username"] == "b"


def test_a_rate_limited_refresh_is_recorded(client: ContractClient, db: None, settings: Settings) -> None:
    settings.WRENN_TOKEN_REFRESH_RATE = "1/hour"
    client.post("/v1/auth/token/refresh", {"refresh": "x"}, format="json", REMOTE_ADDR=ADDRESS)
    response = client.post("/v1/auth/token/refresh", {"refresh": "x"}, format="json", REMOTE_ADDR=ADDRESS)
    assert response.status_code == 429
    assert failures()[-1].reason.startswith("too many token refreshes from this address")


def test_a_right_password_of_someone_not_staff_at_the_admin_is_recorded(member: Any) -> None:
    data = {"username": "alice", "password": MEMBER_PASSWORD}
    client = Client()
    assert client.post("/admin/login/", data, REMOTE_ADDR=ADDRESS).status_code == 200
    event = only_failure()
    assert (event.reason, event.actor_label, event.user_id) == (
        "not a staff account",
        "user:alice",
        member.pk,
    )
    assert "_auth_user_id" not in client.session


def test_a_staff_sign_in_at_the_admin_leaves_nothing(django_user_model: Any) -> None:
    django_user_model.objects.create_user(username="root", password="root-password-1", is_staff=True)
    data = {"username": "root", "password": "root-password-1"}
    assert Client().post("/admin/login/", data, REMOTE_ADDR=ADDRESS).status_code == 302
    assert failures() == []


# Knocking without credentials cannot fill the trail


def test_refusals_past_the_rate_of_an_address_are_left_out_once_said(
    client: ContractClient, db: None, settings: Settings
) -> None:
    settings.WRENN_AUDIT_AUTH_FAILURE_RATE = "3/min"
    for attempt in range(8):
        raw_key = f"wrn_{attempt:040x}"
        assert client.get(CAPSULES, HTTP_X_API_KEY=raw_key, REMOTE_ADDR=ADDRESS).status_code == 401
    events = failures()
    assert [e.reason for e in events[:3]] == ["unknown or malformed API key"] * 3
    (told,) = events[3:]
    assert told.reason.startswith(
        f"unknown or malformed API key; more than 3 refusals from {ADDRESS} within 60 s: those of the next "
    ), told.reason
    assert told.reason.endswith(" s are not recorded")
    # Another address is counted on its own, and every refusal is still answered as one.
    assert (
        client.get(CAPSULES, HTTP_X_API_KEY="wrn_" + "cd" * 20, REMOTE_ADDR="198.51.100.1").status_code == 401
    )
    assert [e.client_address for e in failures()[4:]] == ["198.51.100.1"]


def test_an_ipv6_address_is_counted_by_its_64(client: ContractClient, db: None, settings: Settings) -> None:
    settings.WRENN_AUDIT_AUTH_FAILURE_RATE = "1/min"
    for host in range(1, 5):
        client.get(CAPSULES, HTTP_X_API_KEY="wrn_" + "ef" * 20, REMOTE_ADDR=f"2001:db8:0:1::{host}")
    assert len(failures()) == 2  # one recorded, one saying the rest are left out


def test_with_the_rate_off_every_refusal_is_recorded(
    client: ContractClient, db: None, settings: Settings
) -> None:
    settings.WRENN_AUDIT_AUTH_FAILURE_RATE = "off"
    for _ in range(5):
        client.get(CAPSULES, HTTP_X_API_KEY="wrn_" + "ab" * 20, REMOTE_ADDR=ADDRESS)
    assert [e.reason for e in failures()] == ["unknown or malformed API key"] * 5
