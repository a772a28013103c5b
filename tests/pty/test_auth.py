"""Which credentials the terminal socket takes: the session cookie only from the socket's own origin
(scheme, host and port) or a trusted one; header credentials from anywhere, Origin or not.

Most tests drive pty.auth's middleware, behind Channels' session and user middleware as in
wrenn/asgi.py, on the real database; the last two open real terminals through the whole
application and a real host agent.
"""

from __future__ import annotations

from typing import Any

import pytest
from channels.auth import AuthMiddlewareStack
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings
from django.test import Client

from capsules.models import Sandbox
from pty.auth import SCOPE_AUTH_ERROR, SCOPE_CALLER, Caller, TerminalAuthMiddleware, parse_origin
from tests.support.terminal import Terminal

pytestmark = [pytest.mark.timeout(60)]

Headers = list[tuple[bytes, bytes]]


@pytest.fixture
def session_cookie(member: Any) -> str:
    """The Cookie header of a browser signed in as the member."""
    client = Client()
    client.force_login(member)
    return (
        f"{django_settings.SESSION_COOKIE_NAME}={client.cookies[django_settings.SESSION_COOKIE_NAME].value}"
    )


def browser(cookie: str, origin: str | None, host: str = "127.0.0.1:8000") -> Headers:
    headers = [(b"host", host.encode()), (b"cookie", cookie.encode())]
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    return headers


async def authenticate(headers: Headers) -> tuple[Caller | None, str | None]:
    """The caller (or the refusal) the middleware puts in the scope of a socket with these headers."""
    seen: dict[str, Any] = {}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen["caller"] = scope.get(SCOPE_CALLER)
        seen["error"] = scope.get(SCOPE_AUTH_ERROR)
        await receive()
        await send({"type": "websocket.close"})

    communicator = WebsocketCommunicator(
        AuthMiddlewareStack(TerminalAuthMiddleware(app)), "/", headers=headers
    )
    connected, _ = await communicator.connect(timeout=10)
    assert not connected
    await communicator.wait(timeout=10)
    return seen["caller"], seen["error"]


def method_of(caller: Caller | None) -> str | None:
    return caller.method if caller is not None else None


# --- the session cookie ------------------------------------------------------------


async def test_the_pages_own_origin_may_use_the_cookie(session_cookie: str, member: Any) -> None:
    caller, error = await authenticate(browser(session_cookie, "http://127.0.0.1:8000"))
    assert error is None
    assert caller is not None
    assert (caller.method, caller.label, caller.team_id) == ("session", "user:alice", None)
    assert caller.user is not None
    assert caller.user.pk == member.pk
    assert caller.session_key is not None


async def test_another_port_of_the_same_host_may_not(session_cookie: str) -> None:
    assert await authenticate(browser(session_cookie, "http://127.0.0.1:18299")) == (None, None)


async def test_another_scheme_of_the_same_host_and_port_may_not(session_cookie: str) -> None:
    assert await authenticate(browser(session_cookie, "https://127.0.0.1:8000")) == (None, None)


async def test_another_allowed_host_may_not(session_cookie: str) -> None:
    # localhost is in ALLOWED_HOSTS too, but it is not the host this socket was opened on.
    assert await authenticate(browser(session_cookie, "http://localhost:8000")) == (None, None)


async def test_the_default_port_may_be_written_or_not(session_cookie: str) -> None:
    caller, _ = await authenticate(browser(session_cookie, "http://localhost", host="localhost:80"))
    assert method_of(caller) == "session"
    caller, _ = await authenticate(browser(session_cookie, "http://LOCALHOST:80", host="localhost"))
    assert method_of(caller) == "session"


async def test_a_host_outside_allowed_hosts_is_never_the_own_origin(session_cookie: str) -> None:
    headers = browser(session_cookie, "http://rebound.example:8000", host="rebound.example:8000")
    assert await authenticate(headers) == (None, None)


@pytest.mark.parametrize("origin", [None, "null", "", "file://", "chrome-extension://abc", "http://[::1"])
async def test_no_usable_origin_means_no_cookie(session_cookie: str, origin: str | None) -> None:
    assert await authenticate(browser(session_cookie, origin)) == (None, None)


async def test_a_trusted_origin_may_use_the_cookie(session_cookie: str, settings: Any) -> None:
    settings.CSRF_TRUSTED_ORIGINS = ["https://console.example.com"]
    caller, _ = await authenticate(browser(session_cookie, "https://console.example.com:443"))
    assert method_of(caller) == "session"
    # Not its other ports, nor plain http.
    assert await authenticate(browser(session_cookie, "https://console.example.com:8443")) == (None, None)
    assert await authenticate(browser(session_cookie, "http://console.example.com")) == (None, None)


async def test_a_trusted_wildcard_covers_subdomains_only(session_cookie: str, settings: Any) -> None:
    settings.CSRF_TRUSTED_ORIGINS = ["https://*.example.com"]
    caller, _ = await authenticate(browser(session_cookie, "https://eu.console.example.com"))
    assert method_of(caller) == "session"
    assert await authenticate(browser(session_cookie, "https://example.org")) == (None, None)
    assert await authenticate(browser(session_cookie, "http://eu.example.com")) == (None, None)


async def test_behind_a_tls_proxy_the_scheme_comes_from_its_header(
    session_cookie: str, settings: Any
) -> None:
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    behind_tls = [
        *browser(session_cookie, "https://localhost", host="localhost"),
        (b"x-forwarded-proto", b"https"),
    ]
    caller, _ = await authenticate(behind_tls)
    assert method_of(caller) == "session"
    # Without the header the socket is plain http, and an https page is another origin.
    assert await authenticate(browser(session_cookie, "https://localhost", host="localhost")) == (None, None)


async def test_the_forwarded_host_counts_only_when_configured(session_cookie: str, settings: Any) -> None:
    headers = [*browser(session_cookie, "http://localhost:9000"), (b"x-forwarded-host", b"localhost:9000")]
    assert await authenticate(headers) == (None, None)
    settings.USE_X_FORWARDED_HOST = True
    caller, _ = await authenticate(headers)
    assert method_of(caller) == "session"


async def test_an_inactive_users_cookie_counts_for_nothing(session_cookie: str, member: Any) -> None:
    member.is_active = False
    await member.asave(update_fields=["is_active"])
    assert await authenticate(browser(session_cookie, "http://127.0.0.1:8000")) == (None, None)


# --- header credentials (SDKs send no Origin) --------------------------------------


async def test_an_api_key_needs_no_origin(api_key: str) -> None:
    caller, error = await authenticate([(b"x-api-key", api_key.encode())])
    assert error is None
    assert method_of(caller) == "api_key"
    assert caller is not None
    assert caller.key_id is not None


async def test_header_credentials_win_over_a_cross_origin_cookie(session_cookie: str, api_key: str) -> None:
    headers = [*browser(session_cookie, "http://127.0.0.1:18299"), (b"x-api-key", api_key.encode())]
    caller, _ = await authenticate(headers)
    assert method_of(caller) == "api_key"


async def test_a_bad_header_is_refused_with_its_reason(session_cookie: str) -> None:
    headers = [*browser(session_cookie, "http://127.0.0.1:8000"), (b"authorization", b"Basic abc")]
    assert await authenticate(headers) == (
        None,
        "authentication failed: Authorization must be 'Bearer <token>'",
    )


@pytest.mark.parametrize(
    ("value", "origin"),
    [
        ("http://127.0.0.1:8000", ("http", "127.0.0.1", 8000)),
        ("HTTPS://Example.COM", ("https", "example.com", 443)),
        ("http://[::1]:8000", ("http", "::1", 8000)),
        ("http://example.com:99999", None),
        ("ws://example.com", None),
        ("null", None),
    ],
)
def test_parse_origin(value: str, origin: tuple[str, str, int] | None) -> None:
    assert parse_origin(value) == origin


# --- through the whole application -------------------------------------------------


def pty_path(capsule: Sandbox) -> str:
    return f"/v1/capsules/{capsule.id}/pty"


async def test_the_terminal_page_opens_a_shell_on_its_cookie(
    open_socket: Any, capsule: Sandbox, session_cookie: str
) -> None:
    term = Terminal.over_communicator(
        await open_socket(pty_path(capsule), browser(session_cookie, "http://127.0.0.1:8000"))
    )
    await term.start(cmd="/bin/echo", args=["cookie-ok"])
    await term.read_until(b"cookie-ok")


async def test_a_page_on_another_port_must_authenticate_itself(
    open_socket: Any, capsule: Sandbox, session_cookie: str
) -> None:
    term = Terminal.over_communicator(
        await open_socket(pty_path(capsule), browser(session_cookie, "http://127.0.0.1:18299"))
    )
    await term.send(type="start")
    frame = await term.recv()
    assert frame == {
        "type": "error",
        "data": 'authentication required: send {"type": "auth", "token": ...} first',
        "fatal": True,
    }
