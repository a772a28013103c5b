"""pty.credentials.still_valid against the real test database: each way a terminal's credentials
stop holding gives its own reason, and a check costs one query (two for a session)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth import get_user_model
from django.contrib.sessions.models import Session
from django.db.models import QuerySet
from django.test import Client
from django.utils import timezone
from rest_framework_simplejwt.tokens import AccessToken

from capsules.keys import create_api_key, revoke_api_keys
from capsules.models import APIKey, Membership, Team
from capsules.tokens import tokens_for
from pty import credentials
from pty.auth import Caller, caller_from_token
from pty.credentials import still_valid
from tests.pty.test_auth import authenticate, browser

pytestmark = [pytest.mark.timeout(30)]


@pytest.fixture
def key_caller(team: Team) -> Caller:
    return async_to_sync(caller_from_token)(create_api_key(team, "sdk")[1])


@pytest.fixture
def token_caller(member: Any, team: Team) -> Caller:
    return async_to_sync(caller_from_token)(tokens_for(member, team)["access"])


@pytest.fixture
def signed_in(member: Any) -> Client:
    client = Client()
    client.force_login(member)
    return client


@pytest.fixture
def session_caller(signed_in: Client) -> Caller:
    cookie = f"sessionid={signed_in.cookies['sessionid'].value}"
    caller, _ = async_to_sync(authenticate)(browser(cookie, "http://127.0.0.1:8000"))
    assert caller is not None
    assert caller.method == "session"
    return caller


def key_row(caller: Caller) -> QuerySet[APIKey]:
    assert caller.key_id is not None
    return APIKey.objects.filter(pk=caller.key_id)


Check = Callable[..., str | None]
check: Check = async_to_sync(still_valid)


# --- API keys ------------------------------------------------------------------------


def test_a_live_key_holds(key_caller: Caller, team: Team) -> None:
    assert key_caller.key_id is not None
    assert check(key_caller) is None
    assert check(key_caller, team.id) is None


def test_a_revoked_key(key_caller: Caller) -> None:
    revoke_api_keys(key_row(key_caller))
    assert check(key_caller) == "the API key was revoked"


def test_a_deleted_key(key_caller: Caller) -> None:
    key_row(key_caller).delete()
    assert check(key_caller) == "the API key was deleted"


def test_a_key_whose_team_was_deleted(key_caller: Caller, team: Team) -> None:
    team.delete()
    assert check(key_caller) == "the API key was deleted"


def test_a_key_caller_without_its_id_is_a_programming_error(key_caller: Caller) -> None:
    with pytest.raises(ValueError, match=r"^an API key caller without key_id cannot be checked$"):
        check(dataclasses.replace(key_caller, key_id=None))


# --- access tokens -------------------------------------------------------------------


def test_a_token_caller_carries_the_tokens_expiry(member: Any, team: Team) -> None:
    raw = tokens_for(member, team)["access"]
    caller = async_to_sync(caller_from_token)(raw)
    assert caller.expires_at == datetime.fromtimestamp(AccessToken(raw)["exp"], tz=UTC)  # type: ignore[arg-type]


def test_a_valid_token_holds(token_caller: Caller) -> None:
    assert check(token_caller) is None


def test_an_expired_token(token_caller: Caller) -> None:
    expired = dataclasses.replace(token_caller, expires_at=timezone.now() - timedelta(seconds=1))
    assert check(expired) == "the access token expired"


def test_a_deactivated_user(token_caller: Caller, member: Any) -> None:
    get_user_model().objects.filter(pk=member.pk).update(is_active=False)
    assert check(token_caller) == "the user was deactivated"


def test_a_deleted_user(token_caller: Caller, member: Any) -> None:
    get_user_model().objects.filter(pk=member.pk).delete()
    assert check(token_caller) == "the user was deleted"


def test_a_user_removed_from_the_tokens_team(token_caller: Caller, member: Any, team: Team) -> None:
    Membership.objects.filter(user=member, team=team).delete()
    assert check(token_caller) == "the user is no longer a member of the team"


def test_a_token_stays_bound_to_its_own_team(token_caller: Caller, other_team: Team) -> None:
    # The capsule's team is the token's (the consumer checked it); another id changes nothing.
    assert check(token_caller, other_team.id) is None


def test_a_token_on_the_admin_route_needs_a_staff_user(token_caller: Caller, member: Any) -> None:
    assert check(token_caller, staff=True) == "the user is no longer staff"
    get_user_model().objects.filter(pk=member.pk).update(is_staff=True)
    assert check(token_caller, staff=True) is None


# --- session cookies -----------------------------------------------------------------

ENDED = "the session ended (signed out, expired, or the password changed)"


def test_a_session_holds_while_the_user_is_signed_in_and_a_member(session_caller: Caller, team: Team) -> None:
    assert check(session_caller, team.id) is None
    assert check(session_caller, str(team.id)) is None


def test_a_session_user_removed_from_the_capsules_team(
    session_caller: Caller, member: Any, team: Team
) -> None:
    Membership.objects.filter(user=member, team=team).delete()
    assert check(session_caller, team.id) == "the user is no longer a member of the team"


def test_a_session_against_another_teams_capsule(session_caller: Caller, other_team: Team) -> None:
    assert check(session_caller, other_team.id) == "the user is no longer a member of the team"


def test_signing_out_ends_the_session(session_caller: Caller, signed_in: Client, team: Team) -> None:
    signed_in.logout()
    assert check(session_caller, team.id) == ENDED


def test_a_password_change_ends_the_session(session_caller: Caller, member: Any, team: Team) -> None:
    member.set_password("a-new-password-2")
    member.save(update_fields=["password"])
    assert check(session_caller, team.id) == ENDED


def test_an_expired_session(session_caller: Caller, team: Team) -> None:
    Session.objects.filter(pk=session_caller.session_key).update(
        expire_date=timezone.now() - timedelta(seconds=1)
    )
    assert check(session_caller, team.id) == ENDED


def test_a_session_without_a_key(session_caller: Caller, team: Team) -> None:
    assert check(dataclasses.replace(session_caller, session_key=None), team.id) == ENDED


def test_a_deactivated_session_user(session_caller: Caller, member: Any, team: Team) -> None:
    get_user_model().objects.filter(pk=member.pk).update(is_active=False)
    assert check(session_caller, team.id) == "the user was deactivated"


def test_a_deleted_session_user(session_caller: Caller, member: Any, team: Team) -> None:
    get_user_model().objects.filter(pk=member.pk).delete()
    assert check(session_caller, team.id) == "the user was deleted"


def test_staff_on_the_admin_route_need_no_membership(session_caller: Caller, member: Any, team: Team) -> None:
    get_user_model().objects.filter(pk=member.pk).update(is_staff=True)
    Membership.objects.filter(user=member, team=team).delete()
    assert check(session_caller, staff=True) is None
    get_user_model().objects.filter(pk=member.pk).update(is_staff=False)
    assert check(session_caller, staff=True) == "the user is no longer staff"


def test_a_session_check_needs_the_capsules_team(session_caller: Caller) -> None:
    with pytest.raises(
        ValueError, match=r"^a session caller is checked against the capsule's team: pass team_id$"
    ):
        check(session_caller)


def test_a_user_caller_without_a_user_is_a_programming_error(token_caller: Caller) -> None:
    with pytest.raises(ValueError, match=r"^a jwt caller without a user cannot be checked$"):
        check(dataclasses.replace(token_caller, user=None))


# --- cost ----------------------------------------------------------------------------


def test_each_check_is_one_query_two_for_a_session(
    key_caller: Caller,
    token_caller: Caller,
    session_caller: Caller,
    team: Team,
    django_assert_num_queries: Any,
) -> None:
    with django_assert_num_queries(1):
        assert check(key_caller) is None
    with django_assert_num_queries(1):
        assert check(token_caller) is None
    with django_assert_num_queries(2):
        assert check(session_caller, team.id) is None
    expired = dataclasses.replace(token_caller, expires_at=timezone.now())
    with django_assert_num_queries(0):
        assert check(expired) == "the access token expired"


def test_the_interval_is_a_setting(settings: Any) -> None:
    assert credentials.check_interval() == 5.0
    settings.PTY_CREDENTIAL_CHECK_SECONDS = 0.5
    assert credentials.check_interval() == 0.5
