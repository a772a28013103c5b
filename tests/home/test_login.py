"""Signing in and out: anonymous visitors are sent to the people's login, which admits a member who
is not staff (the admin's does not), under the same rate limits as every sign-in."""

from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from tests.capsules import MEMBER_PASSWORD


def test_an_anonymous_visitor_is_sent_to_the_login(db: None) -> None:
    response = Client().get("/")
    assert response.status_code == 302
    assert response["Location"] == "/login/?next=/"


def test_the_login_page_is_a_form_with_the_next_page(db: None) -> None:
    response = Client().get("/login/?next=/")
    assert response.status_code == 200
    body = response.content.decode()
    assert 'name="username"' in body
    assert 'name="password"' in body
    assert 'name="next" value="/"' in body


def test_a_member_who_is_not_staff_signs_in_and_lands_on_home(member: Any) -> None:
    assert not member.is_staff
    client = Client()
    response = client.post("/login/", {"username": "alice", "password": MEMBER_PASSWORD, "next": "/"})
    assert response.status_code == 302
    assert response["Location"] == "/"
    assert client.get("/").status_code == 200


def test_without_a_next_page_signing_in_lands_on_home(member: Any) -> None:
    response = Client().post("/login/", {"username": "alice", "password": MEMBER_PASSWORD})
    assert response["Location"] == "/"


def test_the_admin_login_refuses_the_same_member(member: Any) -> None:
    """Why the people's login exists: the admin's admits staff only."""
    client = Client()
    response = client.post("/admin/login/", {"username": "alice", "password": MEMBER_PASSWORD, "next": "/"})
    assert response.status_code == 200
    assert "staff account" in response.content.decode()
    assert client.get("/").status_code == 302


def test_a_wrong_password_is_refused_with_a_message(member: Any) -> None:
    response = Client().post("/login/", {"username": "alice", "password": "wrong"})
    assert response.status_code == 200
    assert 'id="error"' in response.content.decode()
    assert "Please enter a correct username and password" in response.content.decode()


def test_an_inactive_user_cannot_sign_in(member: Any) -> None:
    member.is_active = False
    member.save()
    response = Client().post("/login/", {"username": "alice", "password": MEMBER_PASSWORD})
    assert response.status_code == 200
    assert 'id="error"' in response.content.decode()


def test_a_next_page_on_another_site_is_not_followed(member: Any) -> None:
    response = Client().post(
        "/login/", {"username": "alice", "password": MEMBER_PASSWORD, "next": "https://evil.example/"}
    )
    assert response["Location"] == "/"


def test_attempts_past_the_rate_answer_429_and_are_not_tried(member: Any, settings: Any) -> None:
    settings.WRENN_LOGIN_RATE = "2/min"
    client = Client()
    for _ in range(2):
        assert client.post("/login/", {"username": "alice", "password": "wrong"}).status_code == 200
    refused = client.post("/login/", {"username": "alice", "password": MEMBER_PASSWORD})
    assert refused.status_code == 429
    assert int(refused["Retry-After"]) > 0
    assert "too many sign-in attempts for this account" in refused.content.decode()
    # The right password was not tried: the client is still anonymous.
    assert client.get("/").status_code == 302


def test_the_address_rate_counts_every_account(db: None, settings: Any) -> None:
    settings.WRENN_LOGIN_ADDRESS_RATE = "1/min"
    client = Client()
    client.post("/login/", {"username": "nobody", "password": "x"})
    refused = client.post("/login/", {"username": "someone-else", "password": "x"})
    assert refused.status_code == 429
    assert "too many sign-in attempts from this address" in refused.content.decode()


def test_signing_out_takes_a_post_and_ends_the_session(client_of: Client) -> None:
    assert client_of.get("/logout/").status_code == 405
    response = client_of.post("/logout/")
    assert response.status_code == 302
    assert response["Location"] == "/login/"
    assert client_of.get("/").status_code == 302


def test_signing_out_needs_the_csrf_token(member: Any) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(member)
    assert client.post("/logout/").status_code == 403
    assert client.get("/").status_code == 200


@pytest.mark.parametrize("path", ["/", "/capsules/cl-abc/recordings/pty-0a1b2c3d/"])
def test_pages_send_anonymous_visitors_to_the_people_login(db: None, path: str) -> None:
    response = Client().get(path)
    assert response.status_code == 302
    assert response["Location"].startswith("/login/?next=")


def test_a_signed_in_visitor_of_the_login_page_goes_home(client_of: Client) -> None:
    response = client_of.get("/login/")
    assert response.status_code == 302
    assert response["Location"] == "/"


def test_staff_still_sign_in_on_the_admin_login(db: None) -> None:
    get_user_model().objects.create_user(username="ops", password="pw-ops-1234", is_staff=True)
    client = Client()
    response = client.post("/admin/login/", {"username": "ops", "password": "pw-ops-1234", "next": "/admin/"})
    assert response.status_code == 302
