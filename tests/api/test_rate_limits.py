"""Sign-in and refresh limits per client address and per account (capsules/ratelimit.py): the
attempt past the rate answers 429 with Retry-After, other addresses and accounts are not affected,
and sign-ins within the limit work. Each test has an in-memory cache of its own (tests/conftest.py);
tests/integration/test_rate_limits.py counts across real daphne workers sharing Redis."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from django.test import Client
from pytest_django import Settings

from capsules.ratelimit import account_key, client_address, hit
from capsules.tokens import tokens_for
from tests.api import error
from tests.api.contract import ContractClient
from tests.capsules import MEMBER_PASSWORD
from tests.support.polling import wait_until
from wrenn.rates import Rate

LOGIN = "/v1/auth/login"
TOKEN = "/v1/auth/token"
REFRESH = "/v1/auth/refresh"
ADMIN_LOGIN = "/admin/login/"
FOR_ACCOUNT = "too many sign-in attempts for this account"
FROM_ADDRESS = "too many sign-in attempts from this address"


@pytest.fixture
def three_per_account(settings: Settings) -> None:
    settings.WRENN_LOGIN_RATE = "3/hour"
    settings.WRENN_LOGIN_ADDRESS_RATE = "100/hour"


@pytest.fixture
def three_per_address(settings: Settings) -> None:
    settings.WRENN_LOGIN_RATE = "100/hour"
    settings.WRENN_LOGIN_ADDRESS_RATE = "3/hour"


def login(
    client: ContractClient, password: str, email: str = "alice@example.com", address: str = "10.0.0.1"
) -> Any:
    return client.post(LOGIN, {"email": email, "password": password}, format="json", REMOTE_ADDR=address)


def assert_limited(response: Any, what: str, period: int = 3600) -> None:
    assert response.status_code == 429
    retry_after = int(response["Retry-After"])
    assert 1 <= retry_after <= period
    unit = "second" if retry_after == 1 else "seconds"
    assert response.json() == error("rate_limited", f"{what}; try again in {retry_after} {unit}")


# The API's sign-in


def test_the_attempt_past_the_account_rate_is_refused(
    client: ContractClient, member: Any, three_per_account: None
) -> None:
    for _ in range(3):
        assert login(client, "wrong").status_code == 401
    assert_limited(login(client, "wrong"), FOR_ACCOUNT)
    # The right password is not even tried.
    assert_limited(login(client, MEMBER_PASSWORD), FOR_ACCOUNT)


def test_a_sign_in_within_the_limit_works(
    client: ContractClient, member: Any, three_per_account: None
) -> None:
    assert login(client, "wrong").status_code == 401
    assert login(client, "wrong").status_code == 401
    assert login(client, MEMBER_PASSWORD).status_code == 200


def test_another_account_is_not_affected(
    client: ContractClient, member: Any, three_per_account: None, django_user_model: Any
) -> None:
    django_user_model.objects.create_user(username="bob", email="bob@example.com", password="bob-password-1")
    for _ in range(3):
        login(client, "wrong")
    assert_limited(login(client, "wrong"), FOR_ACCOUNT)
    assert login(client, "wrong", email="bob@example.com").status_code == 401


def test_an_account_is_limited_from_every_address(
    client: ContractClient, member: Any, three_per_account: None
) -> None:
    for n in range(3):
        login(client, "wrong", address=f"10.0.0.{n + 1}")
    assert_limited(login(client, MEMBER_PASSWORD, address="192.0.2.7"), FOR_ACCOUNT)


def test_username_and_email_of_one_account_count_together(
    client: ContractClient, member: Any, three_per_account: None
) -> None:
    token = {"username": "alice", "password": "wrong"}
    assert client.post(TOKEN, token, format="json", REMOTE_ADDR="10.0.0.1").status_code == 401
    assert (
        client.post(TOKEN, {**token, "username": "ALICE"}, format="json", REMOTE_ADDR="10.0.0.1").status_code
        == 401
    )
    assert login(client, "wrong").status_code == 401
    assert_limited(client.post(TOKEN, token, format="json", REMOTE_ADDR="10.0.0.1"), FOR_ACCOUNT)


def test_the_attempt_past_the_address_rate_is_refused(
    client: ContractClient, member: Any, three_per_address: None
) -> None:
    for n in range(3):
        assert login(client, "wrong", email=f"guess{n}@example.com").status_code == 401
    assert_limited(login(client, MEMBER_PASSWORD), FROM_ADDRESS)
    # Another address signs in.
    assert login(client, MEMBER_PASSWORD, address="10.0.0.2").status_code == 200


def test_the_token_endpoint_is_limited_too(
    client: ContractClient, member: Any, three_per_address: None
) -> None:
    body = {"username": "alice", "password": "wrong"}
    for _ in range(3):
        assert client.post(TOKEN, body, format="json", REMOTE_ADDR="10.0.0.1").status_code == 401
    assert_limited(client.post(TOKEN, body, format="json", REMOTE_ADDR="10.0.0.1"), FROM_ADDRESS)


def test_malformed_requests_are_not_counted(
    client: ContractClient, member: Any, three_per_address: None
) -> None:
    for _ in range(5):
        assert client.post(LOGIN, {"email": "alice@example.com"}, format="json").status_code == 400
    assert login(client, MEMBER_PASSWORD).status_code == 200


def test_off_turns_a_limit_off(client: ContractClient, member: Any, settings: Settings) -> None:
    settings.WRENN_LOGIN_RATE = "off"
    settings.WRENN_LOGIN_ADDRESS_RATE = "off"
    for _ in range(12):
        assert login(client, "wrong").status_code == 401
    assert login(client, MEMBER_PASSWORD).status_code == 200


# Refreshing


def test_refreshes_are_limited_per_address(
    client: ContractClient, member: Any, team: Any, settings: Settings
) -> None:
    settings.WRENN_TOKEN_REFRESH_RATE = "2/hour"
    refresh = tokens_for(member, team)["refresh"]
    for _ in range(2):
        assert (
            client.post(REFRESH, {"refresh": refresh}, format="json", REMOTE_ADDR="10.0.0.1").status_code
            == 200
        )
    limited = client.post(REFRESH, {"refresh": refresh}, format="json", REMOTE_ADDR="10.0.0.1")
    assert_limited(limited, "too many token refreshes from this address")
    assert (
        client.post(REFRESH, {"refresh": refresh}, format="json", REMOTE_ADDR="10.0.0.2").status_code == 200
    )


# The admin's login page


def admin_login(client: Client, username: str, password: str, address: str = "10.0.0.1") -> Any:
    return client.post(ADMIN_LOGIN, {"username": username, "password": password}, REMOTE_ADDR=address)


@pytest.fixture
def staff(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user(username="root", password="root-password-1", is_staff=True)


def test_the_admin_login_is_limited_per_account(staff: Any, three_per_account: None) -> None:
    client = Client()
    for _ in range(3):
        assert admin_login(client, "root", "wrong").status_code == 200  # the form again, with its error
    response = admin_login(client, "root", "root-password-1")
    assert response.status_code == 429
    retry_after = int(response["Retry-After"])
    assert 1 <= retry_after <= 3600
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    assert response.content.decode() == f"{FOR_ACCOUNT}; try again in {retry_after} seconds\n"
    assert "_auth_user_id" not in client.session


def test_the_admin_login_works_within_the_limit(staff: Any, three_per_account: None) -> None:
    client = Client()
    assert admin_login(client, "root", "wrong").status_code == 200
    response = admin_login(client, "root", "root-password-1")
    assert response.status_code == 302
    assert client.session["_auth_user_id"] == str(staff.pk)


def test_the_admin_login_is_limited_per_address(staff: Any, three_per_address: None) -> None:
    client = Client()
    for n in range(3):
        admin_login(client, f"guess{n}", "wrong")
    assert admin_login(client, "root", "root-password-1").status_code == 429
    assert admin_login(client, "root", "root-password-1", address="10.0.0.2").status_code == 302


def test_the_admin_login_page_itself_is_not_counted(staff: Any, three_per_address: None) -> None:
    client = Client()
    for _ in range(5):
        assert client.get(ADMIN_LOGIN).status_code == 200
    assert admin_login(client, "root", "root-password-1").status_code == 302


# Counting


def test_retry_after_is_what_is_left_of_the_window() -> None:
    rate = Rate(count=2, seconds=60)
    assert hit("t", "k", rate, now=1000.0) is None
    assert hit("t", "k", rate, now=1010.0) is None
    assert hit("t", "k", rate, now=1010.0) == 50
    assert hit("t", "k", rate, now=1059.5) == 1
    assert hit("t", "other", rate, now=1059.5) is None


def test_no_rate_counts_nothing() -> None:
    for _ in range(100):
        assert hit("t", "k", None) is None


async def test_the_limit_lifts_when_its_period_is_over() -> None:
    rate = Rate(count=1, seconds=1)
    assert hit("t", "k", rate) is None
    assert hit("t", "k", rate) == 1
    await wait_until(lambda: hit("t", "k", rate) is None, within=10)


def test_a_cache_that_fails_lets_sign_ins_through(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    # A Redis nobody listens on: every cache call fails at once.
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
        }
    }
    with caplog.at_level(logging.WARNING, logger="capsules.ratelimit"):
        assert hit("t", "k", Rate(count=1, seconds=60)) is None
    assert [r.getMessage() for r in caplog.records] == ["rate limit t not counted: the cache failed"]


@pytest.mark.parametrize(
    ("remote", "counted_as"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("", "unknown"),
        ("not-an-address", "not-an-address"),
    ],
)
def test_client_addresses(rf: Any, remote: str, counted_as: str) -> None:
    assert client_address(rf.post("/", REMOTE_ADDR=remote)) == counted_as


def test_account_keys(member: Any, django_user_model: Any) -> None:
    assert account_key(username="Alice") == "user:alice"
    assert account_key(email="ALICE@example.com") == "user:alice"
    assert account_key(email="nobody@example.com") == "email:nobody@example.com"
    # Two users with one email: the email itself is the key.
    django_user_model.objects.create_user(
        username="alice2", email="alice@example.com", password="x-password-1"
    )
    assert account_key(email="alice@example.com") == "email:alice@example.com"
    assert account_key() is None
