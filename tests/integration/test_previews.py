"""Preview URLs on the real stack: `{port}-{capsule}.localhost:<daphne>` proxied into a server inside
an OCI capsule (tests/integration/preview_server.py), over HTTP and WebSocket, and who may open one.

The Host header is sent explicitly: the test process does not rely on `*.localhost` resolving.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Origin

from tests.integration.preview_server import big_body
from tests.support.polling import wait_until
from tests.support.stack import Stack
from tests.support.terminal import JSON_DIALECT, Terminal

pytestmark = [pytest.mark.timeout(180)]

PORT = 8080
MIB = 1024 * 1024
WRITTEN_AHEAD_BOUND = 24 * MIB
DAPHNE_BOUND = 16 * MIB
SERVER = Path(__file__).with_name("preview_server.py")
Response = tuple[int, dict[str, list[str]], bytes]


def api(stack: Stack, key: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=60)
    try:
        headers = {"X-API-Key": key, "Content-Type": "application/json"}
        connection.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
        response = connection.getresponse()
        raw = response.read()
        return response.status, json.loads(raw) if raw else None
    finally:
        connection.close()


def fetch(
    stack: Stack,
    host: str,
    path: str = "/",
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> Response:
    """One request to daphne with this Host; the status, the headers (lowercase names) and the body."""
    connection = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=60)
    try:
        connection.request(method, path, body=body, headers={"Host": host, **(headers or {})})
        response = connection.getresponse()
        found: dict[str, list[str]] = {}
        for name, value in response.getheaders():
            found.setdefault(name.lower(), []).append(value)
        return response.status, found, response.read()
    finally:
        connection.close()


def preview_host(stack: Stack, capsule_id: str, port: int | str = PORT) -> str:
    return f"{port}-{capsule_id}.localhost:{stack.port}"


def error_of(body: bytes) -> dict[str, str]:
    return dict(json.loads(body)["error"])


async def start_server(stack: Stack, key: str, capsule_id: str) -> None:
    """The test server, written into the capsule through a terminal and started there."""
    encoded = base64.encodebytes(SERVER.read_bytes()).decode()
    url = f"{stack.ws_url()}/v1/capsules/{capsule_id}/pty"
    async with connect(url, subprotocols=JSON_DIALECT, additional_headers=[("X-API-Key", key)]) as websocket:
        terminal = Terminal.over_websocket(websocket)
        await terminal.start()
        await terminal.type(f"base64 -d > /tmp/preview_server.py <<'EOF'\n{encoded}EOF\n")
        await terminal.type(f"python3 /tmp/preview_server.py {PORT}\n")
        await terminal.read_until(b"preview server ready", timeout=60)


def shell(stack: Stack, code: str) -> str:
    """What `code` printed last in `manage.py shell` (which may say more before it)."""
    return stack.manage("shell", "-c", code).strip().splitlines()[-1]


@pytest.fixture(scope="module")
def capsule(stack: Stack, demo: dict[str, Any]) -> Iterator[str]:
    """A running capsule of the demo team with the test server on its port 8080."""
    code, body = api(stack, demo["api_key"], "POST", "/v1/capsules", {"timeout_sec": 0})
    assert code == 201, body
    asyncio.run(start_server(stack, demo["api_key"], body["id"]))
    yield body["id"]
    api(stack, demo["api_key"], "DELETE", f"/v1/capsules/{body['id']}")


@pytest.fixture(scope="module")
def other_key(stack: Stack) -> str:
    """An API key of another team."""
    return shell(
        stack,
        "from capsules.models import Team; from capsules.keys import create_api_key; "
        "t = Team.objects.create(name='Other', slug='other-previews'); print(create_api_key(t, 'x')[1])",
    )


@pytest.fixture(scope="module")
def session_cookie(stack: Stack, demo: dict[str, Any]) -> str:
    """The session cookie of the demo user (a member of the capsule's team)."""
    return shell(
        stack,
        "from django.test import Client; from django.contrib.auth import get_user_model; c = Client(); "
        f"c.force_login(get_user_model().objects.get(username={demo['username']!r})); "
        "print(c.cookies['sessionid'].value)",
    )


def issue_link(stack: Stack, key: str, capsule_id: str, port: int = PORT, **fields: Any) -> dict[str, Any]:
    code, link = api(stack, key, "POST", f"/v1/capsules/{capsule_id}/previews", {"port": port, **fields})
    assert code == 201, link
    return dict(link)


async def drain(websocket: Any) -> None:
    """Read until the socket closes (ConnectionClosed)."""
    while True:
        await websocket.recv()


def token_path(link: dict[str, Any], path: str = "/headers") -> str:
    return f"{path}?{urllib.parse.urlsplit(link['url']).query}"


# --- HTTP with the team's credentials ------------------------------------------------------------


def test_the_teams_key_opens_the_preview_and_stays_out_of_the_capsule(
    stack: Stack, demo: dict[str, Any], capsule: str, session_cookie: str
) -> None:
    headers = {
        "X-API-Key": demo["api_key"],
        "Cookie": f"sessionid={session_cookie}; theirs=kept; csrftoken=x",
    }
    status, _, body = fetch(stack, preview_host(stack, capsule), "/headers", headers=headers)
    assert status == 200, body
    seen = body.decode("latin1").lower()
    assert seen.startswith("get /headers http/1.1")
    assert "theirs=kept" in seen
    assert "x-api-key" not in seen
    assert "sessionid" not in seen
    assert "csrftoken" not in seen
    assert demo["api_key"].lower() not in seen


def test_a_bearer_token_of_the_team_opens_it_and_is_not_forwarded(
    stack: Stack, demo: dict[str, Any], capsule: str
) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=60)
    credentials = {"username": demo["username"], "password": demo["password"]}
    connection.request(
        "POST", "/v1/auth/token", body=json.dumps(credentials), headers={"Content-Type": "application/json"}
    )
    response = connection.getresponse()
    tokens = json.loads(response.read())
    assert response.status == 200, tokens
    status, _, body = fetch(
        stack,
        preview_host(stack, capsule),
        "/headers",
        headers={"Authorization": f"Bearer {tokens['access']}"},
    )
    assert status == 200, body
    assert b"authorization" not in body.lower()


def test_a_large_chunked_response_arrives_intact(stack: Stack, demo: dict[str, Any], capsule: str) -> None:
    status, headers, body = fetch(
        stack, preview_host(stack, capsule), "/big", headers={"X-API-Key": demo["api_key"]}
    )
    assert status == 200
    assert "content-length" not in headers  # streamed through, not read whole and measured
    assert body == big_body()


def test_a_large_request_body_goes_up_intact(stack: Stack, demo: dict[str, Any], capsule: str) -> None:
    payload = bytes(range(251)) * 10_000  # 2.4 MiB
    status, _, body = fetch(
        stack,
        preview_host(stack, capsule),
        "/echo",
        method="POST",
        headers={"X-API-Key": demo["api_key"]},
        body=payload,
    )
    assert status == 200
    assert body == payload


def test_a_body_the_capsule_breaks_off_is_not_passed_off_as_whole(
    stack: Stack, demo: dict[str, Any], capsule: str
) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=60)
    try:
        connection.request(
            "GET", "/broken", headers={"Host": preview_host(stack, capsule), "X-API-Key": demo["api_key"]}
        )
        response = connection.getresponse()
        assert response.status == 200
        with pytest.raises(http.client.IncompleteRead) as cut:
            response.read()
    finally:
        connection.close()
    assert len(cut.value.partial) == 1000


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def test_a_slow_reader_holds_the_capsules_server_back_in_bounded_memory(
    stack: Stack, demo: dict[str, Any], capsule: str
) -> None:
    # The server writes as fast as it is let; the client reads 8 MiB at about 2 MiB/s. Without
    # backpressure on every hop, daphne would take the server's output as fast as it comes.
    daphne = stack.workers[0][1].pid
    host = preview_host(stack, capsule)
    headers = {"Host": host, "X-API-Key": demo["api_key"]}
    before = peak = rss(daphne)
    connection = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=60)
    try:
        connection.request("GET", "/endless", headers=headers)
        response = connection.getresponse()
        assert response.status == 200
        read = 0
        while read < 8 * MIB:
            read += len(response.read(64 * 1024))
            time.sleep(0.03)
            peak = max(peak, rss(daphne))
        written = int(fetch(stack, host, "/written", headers={"X-API-Key": demo["api_key"]})[2])
    finally:
        connection.close()
    # Ahead of the reader: the kernel's socket buffers on each side, gRPC's windows, a chunk or two.
    assert written - read < WRITTEN_AHEAD_BOUND, (written, read)
    assert peak - before < DAPHNE_BOUND, (before, peak)


def test_the_capsule_sets_only_host_only_cookies_of_its_own(
    stack: Stack, demo: dict[str, Any], capsule: str
) -> None:
    status, headers, _ = fetch(
        stack, preview_host(stack, capsule), "/cookie", headers={"X-API-Key": demo["api_key"]}
    )
    assert status == 200
    assert headers["set-cookie"] == ["own=1; Path=/"]


def test_a_members_session_opens_it_but_not_from_another_site(
    stack: Stack, capsule: str, session_cookie: str
) -> None:
    cookie = {"Cookie": f"sessionid={session_cookie}"}
    status, _, body = fetch(stack, preview_host(stack, capsule), "/headers", headers=cookie)
    assert status == 200, body
    # A script of another site (another capsule's preview, say) cannot ride on the session.
    cross = {**cookie, "Sec-Fetch-Site": "same-site", "Sec-Fetch-Mode": "cors"}
    status, _, body = fetch(stack, preview_host(stack, capsule), "/headers", headers=cross)
    assert status == 401, body


# --- Refusals -----------------------------------------------------------------------------------


def test_no_credentials_is_401_with_what_to_send(stack: Stack, capsule: str) -> None:
    status, headers, body = fetch(stack, preview_host(stack, capsule), "/headers")
    assert status == 401
    assert "www-authenticate" in headers
    error = error_of(body)
    assert error["code"] == "unauthorized"
    assert error["message"].startswith("this preview needs credentials")


def test_a_browser_without_credentials_gets_a_page(stack: Stack, capsule: str) -> None:
    status, headers, body = fetch(stack, preview_host(stack, capsule), "/", headers={"Accept": "text/html"})
    assert status == 401
    assert headers["content-type"] == ["text/html; charset=utf-8"]
    assert b"this preview needs credentials" in body


def test_another_teams_key_is_answered_as_a_missing_capsule(
    stack: Stack, capsule: str, other_key: str
) -> None:
    theirs = fetch(stack, preview_host(stack, capsule), "/headers", headers={"X-API-Key": other_key})
    missing = fetch(
        stack, preview_host(stack, "cl-00000000000000000000"), "/headers", headers={"X-API-Key": other_key}
    )
    assert theirs[0] == missing[0] == 404
    assert error_of(theirs[2])["message"] == f"capsule {capsule} not found"
    assert error_of(missing[2])["message"] == "capsule cl-00000000000000000000 not found"


def test_an_invalid_key_is_401(stack: Stack, capsule: str) -> None:
    status, _, body = fetch(
        stack, preview_host(stack, capsule), "/headers", headers={"X-API-Key": "wrn_nope"}
    )
    assert (status, error_of(body)["message"]) == (401, "invalid API key")


@pytest.mark.parametrize("port", ["08080", "0", "65536", "80a", "+8080"])
def test_a_port_not_written_canonically_is_refused(
    stack: Stack, demo: dict[str, Any], capsule: str, port: str
) -> None:
    status, _, body = fetch(
        stack, preview_host(stack, capsule, port), "/headers", headers={"X-API-Key": demo["api_key"]}
    )
    assert status == 400
    assert error_of(body)["code"] == "invalid_request"
    assert "no leading zero" in error_of(body)["message"]


def test_a_port_nothing_listens_on_is_a_bad_gateway(stack: Stack, demo: dict[str, Any], capsule: str) -> None:
    status, _, body = fetch(
        stack, preview_host(stack, capsule, 3000), "/", headers={"X-API-Key": demo["api_key"]}
    )
    assert status == 502
    assert error_of(body) == {
        "code": "bad_gateway",
        "message": f"nothing is listening on port 3000 of capsule {capsule} (connection refused)",
    }


def test_the_platforms_own_ports_are_not_in_a_capsule(
    stack: Stack, demo: dict[str, Any], capsule: str
) -> None:
    # daphne itself, PostgreSQL and Redis listen on the host's loopback, not the capsule's.
    for port in (stack.port, 5432, 6379):
        status, _, body = fetch(
            stack, preview_host(stack, capsule, port), "/", headers={"X-API-Key": demo["api_key"]}
        )
        assert status == 502, body
        assert "nothing is listening" in error_of(body)["message"]


def test_a_paused_capsule_answers_409_with_its_status(stack: Stack, demo: dict[str, Any]) -> None:
    code, capsule = api(stack, demo["api_key"], "POST", "/v1/capsules", {"timeout_sec": 0})
    assert code == 201, capsule
    try:
        code, paused = api(stack, demo["api_key"], "POST", f"/v1/capsules/{capsule['id']}/pause")
        assert code == 200, paused
        status, _, body = fetch(
            stack, preview_host(stack, capsule["id"]), "/", headers={"X-API-Key": demo["api_key"]}
        )
        assert status == 409
        assert error_of(body) == {
            "code": "invalid_state",
            "message": f"capsule {capsule['id']} is paused, not running",
        }
    finally:
        api(stack, demo["api_key"], "DELETE", f"/v1/capsules/{capsule['id']}")


# --- Links and public ports ---------------------------------------------------------------------


def test_a_link_is_traded_for_a_cookie_of_its_preview_host(
    stack: Stack, demo: dict[str, Any], capsule: str
) -> None:
    link = issue_link(stack, demo["api_key"], capsule, expires_in=600)
    assert link["url"].startswith(f"http://{PORT}-{capsule}.localhost:{stack.port}/?wrenn_preview_token=wpt_")
    assert link["status"] == "active"
    host = preview_host(stack, capsule)
    status, headers, _ = fetch(stack, host, token_path(link, "/headers") + "&keep=1")
    assert status == 302
    assert headers["location"] == ["/headers?keep=1"]
    cookie = headers["set-cookie"][0]
    assert cookie.startswith(f"wrenn_preview={link['token']}; Path=/; Max-Age=")
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie
    assert "Domain" not in cookie
    status, _, body = fetch(stack, host, "/headers?keep=1", headers={"Cookie": cookie.split(";", 1)[0]})
    assert status == 200, body
    assert link["token"].encode() not in body  # the cookie stays with the proxy
    # The link opens its own port only.
    status, _, body = fetch(
        stack, preview_host(stack, capsule, 9090), "/", headers={"Cookie": cookie.split(";", 1)[0]}
    )
    assert status == 401
    # The API lists it, without its token.
    code, listed = api(stack, demo["api_key"], "GET", f"/v1/capsules/{capsule}/previews")
    assert code == 200
    mine = next(item for item in listed if item["id"] == link["id"])
    assert "token" not in mine
    assert "wrenn_preview_token" not in mine["url"]


def test_a_revoked_link_stops_at_once_and_closes_its_websockets(
    stack: Stack, demo: dict[str, Any], capsule: str
) -> None:
    link = issue_link(stack, demo["api_key"], capsule)
    host = preview_host(stack, capsule)
    cookie = {"Cookie": f"wrenn_preview={link['token']}"}
    assert fetch(stack, host, "/headers", headers=cookie)[0] == 200

    async def revoke_while_open() -> ConnectionClosed:
        async with connect(
            f"ws://{host}{token_path(link, '/ws')}", host="127.0.0.1", port=stack.port
        ) as websocket:
            await websocket.send("before")
            assert await websocket.recv() == "before"
            code, _ = await asyncio.to_thread(
                api, stack, demo["api_key"], "DELETE", f"/v1/capsules/{capsule}/previews/{link['id']}"
            )
            assert code == 204
            with pytest.raises(ConnectionClosed) as closed:
                await drain(websocket)
            return closed.value

    closed = asyncio.run(revoke_while_open())
    assert closed.rcvd is not None
    assert (closed.rcvd.code, closed.rcvd.reason) == (1008, "this preview link was revoked")
    status, _, body = fetch(stack, host, "/headers", headers=cookie)
    assert (status, error_of(body)["message"]) == (401, "this preview link was revoked")
    status, _, body = fetch(stack, host, token_path(link))
    assert (status, error_of(body)["message"]) == (401, "this preview link was revoked")


def test_an_expired_link_is_refused(stack: Stack, demo: dict[str, Any], capsule: str) -> None:
    link = issue_link(stack, demo["api_key"], capsule)
    with psycopg.connect(stack.env["DATABASE_URL"], autocommit=True) as db:
        db.execute(
            "UPDATE previews_previewlink SET expires_at = now() - interval '1 second' WHERE id = %s",
            (link["id"],),
        )
    status, _, body = fetch(
        stack, preview_host(stack, capsule), "/headers", headers={"Cookie": f"wrenn_preview={link['token']}"}
    )
    assert (status, error_of(body)["message"]) == (401, "this preview link has expired")
    status, _, body = fetch(stack, preview_host(stack, capsule), token_path(link))
    assert (status, error_of(body)["message"]) == (401, "this preview link has expired")


def test_link_requests_are_checked(stack: Stack, demo: dict[str, Any], capsule: str, other_key: str) -> None:
    path = f"/v1/capsules/{capsule}/previews"
    assert api(stack, demo["api_key"], "POST", path, {"port": 0})[1]["error"]["message"] == (
        "port: must be between 1 and 65535"
    )
    assert (
        api(stack, demo["api_key"], "POST", path, {"port": "3000"})[1]["error"]["message"]
        == "port: must be an integer"
    )
    code, body = api(stack, demo["api_key"], "POST", path, {"port": 3000, "expires_in": 10**9})
    assert (code, body["error"]["message"]) == (400, "expires_in: must be at most 604800 seconds")
    assert api(stack, other_key, "POST", path, {"port": 3000})[0] == 404
    assert api(stack, demo["api_key"], "DELETE", f"{path}/pvl-0000000000000000")[0] == 404


def test_a_public_port_needs_no_credentials_until_made_private(
    stack: Stack, demo: dict[str, Any], capsule: str
) -> None:
    host = preview_host(stack, capsule)
    ports = f"/v1/capsules/{capsule}/previews/ports"
    code, body = api(stack, demo["api_key"], "PUT", f"{ports}/{PORT}", {"public": True})
    assert (code, body) == (200, {"port": PORT, "public": True, "url": f"http://{host}/"})
    try:
        assert fetch(stack, host, "/headers")[0] == 200
        assert api(stack, demo["api_key"], "GET", ports)[1] == [body]
    finally:
        assert api(stack, demo["api_key"], "DELETE", f"{ports}/{PORT}")[0] == 204
    assert fetch(stack, host, "/headers")[0] == 401
    code, body = api(stack, demo["api_key"], "PUT", f"{ports}/08080", {"public": True})
    assert code == 400
    assert "no leading zero" in body["error"]["message"]


# --- WebSockets ---------------------------------------------------------------------------------


async def test_a_websocket_echo_server_answers_through_the_preview(
    stack: Stack, demo: dict[str, Any], capsule: str
) -> None:
    host = preview_host(stack, capsule)
    async with asyncio.timeout(60):
        async with connect(
            f"ws://{host}/ws",
            host="127.0.0.1",
            port=stack.port,
            additional_headers=[("X-API-Key", demo["api_key"])],
        ) as websocket:
            await websocket.send("hello")
            assert await websocket.recv() == "hello"
            await websocket.send(b"\x00\xffbinary")
            assert await websocket.recv() == b"\x00\xffbinary"
            large = bytes(range(256)) * 4096  # 1 MiB, in fragments on the way
            await websocket.send(large)
            assert await websocket.recv() == large
            # The server's close code reaches the client.
            await websocket.send("close:4321")
            with pytest.raises(ConnectionClosed) as closed:
                await websocket.recv()
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 4321


async def test_a_slow_websocket_reader_holds_the_capsules_server_back(
    stack: Stack, demo: dict[str, Any], capsule: str
) -> None:
    daphne = stack.workers[0][1].pid
    host = preview_host(stack, capsule)
    headers = {"X-API-Key": demo["api_key"]}
    before = peak = rss(daphne)
    async with asyncio.timeout(120):
        async with connect(
            f"ws://{host}/ws",
            host="127.0.0.1",
            port=stack.port,
            additional_headers=list(headers.items()),
            max_queue=4,
        ) as websocket:
            await websocket.send("flood")
            read = 0
            # Slower than the flood, fast enough to answer the test stack's 2 s pings in time
            # (a ping waits behind what the kernel holds for this socket).
            while read < 16 * MIB:
                read += len(await websocket.recv())
                await asyncio.sleep(0.005)
                peak = max(peak, rss(daphne))
            response = await asyncio.to_thread(fetch, stack, host, "/ws-written", headers=headers)
    written = int(response[2])
    assert written - read < WRITTEN_AHEAD_BOUND, (written, read)
    assert peak - before < DAPHNE_BOUND, (before, peak)


async def test_a_clients_close_code_reaches_the_capsule(
    stack: Stack, demo: dict[str, Any], capsule: str
) -> None:
    host = preview_host(stack, capsule)
    headers = {"X-API-Key": demo["api_key"]}
    async with asyncio.timeout(60):
        websocket = await connect(
            f"ws://{host}/ws", host="127.0.0.1", port=stack.port, additional_headers=list(headers.items())
        )
        await websocket.close(code=4100, reason="bye")

        async def capsule_saw_4100() -> bool:
            response = await asyncio.to_thread(fetch, stack, host, "/last-close", headers=headers)
            return response[2] == b"4100"

        # daphne answers the client's close itself; the capsule's server gets the code just after.
        await wait_until(capsule_saw_4100)


async def test_a_websocket_without_credentials_is_refused_with_401(stack: Stack, capsule: str) -> None:
    host = preview_host(stack, capsule)
    async with asyncio.timeout(60):
        with pytest.raises(InvalidStatus) as refused:
            await connect(f"ws://{host}/ws", host="127.0.0.1", port=stack.port)
    assert refused.value.response.status_code == 401


async def test_a_websocket_from_another_origin_cannot_use_the_cookie(
    stack: Stack, demo: dict[str, Any], capsule: str
) -> None:
    link = issue_link(stack, demo["api_key"], capsule)
    host = preview_host(stack, capsule)
    cookie = ("Cookie", f"wrenn_preview={link['token']}")
    async with asyncio.timeout(60):
        with pytest.raises(InvalidStatus) as refused:
            await connect(
                f"ws://{host}/ws",
                host="127.0.0.1",
                port=stack.port,
                origin=Origin("http://evil.localhost"),
                additional_headers=[cookie],
            )
        assert refused.value.response.status_code == 401
        # From the preview's own page, the cookie counts.
        async with connect(
            f"ws://{host}/ws",
            host="127.0.0.1",
            port=stack.port,
            origin=Origin(f"http://{host}"),
            additional_headers=[cookie],
        ) as websocket:
            await websocket.send("own page")
            assert await websocket.recv() == "own page"
