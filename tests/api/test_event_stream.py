"""`GET /v1/events/stream` through the real ASGI application: credentials as for every API call,
`connected` first, the team's own events only, keepalive comments while idle, and the
subscription ended when the client goes away."""

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from asgiref.testing import ApplicationCommunicator
from channels.layers import get_channel_layer
from django.contrib.auth import get_user_model
from django.db import connections
from django.test import Client

from capsules import live
from capsules.keys import create_api_key, revoke_api_keys
from capsules.models import APIKey, Membership, Team
from capsules.tokens import tokens_for
from tests.api import error
from wrenn.asgi import application

pytestmark = pytest.mark.timeout(30)

STREAM = "/v1/events/stream"
# Against hangs only: a wait this long has failed.
WAIT = 10.0


@pytest.fixture
def team(transactional_db: None) -> Team:
    # Committed: the view authenticates in a worker thread with a connection of its own.
    return Team.objects.create(name="Acme", slug="acme")


@pytest.fixture
def other_team(transactional_db: None) -> Team:
    return Team.objects.create(name="Globex", slug="globex")


@pytest.fixture(autouse=True)
async def _close_thread_connections() -> AsyncIterator[None]:
    """The worker thread's connection closes with the test, so that the test database can be dropped."""
    yield
    await sync_to_async(connections.close_all)()


@pytest.fixture
def api_key(team: Team) -> str:
    return create_api_key(team, "events")[1]


@pytest.fixture
def member_token(team: Team) -> str:
    user = get_user_model().objects.create_user(username="bob", password="bob-password-1")
    Membership.objects.create(user=user, team=team, role=Membership.Role.MEMBER)
    return tokens_for(user, team)["access"]


class Stream:
    """One client of the stream: reads the response's chunks as they come."""

    def __init__(self, headers: list[tuple[bytes, bytes]]) -> None:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": STREAM,
            "raw_path": STREAM.encode(),
            "query_string": b"",
            "headers": [(b"host", b"localhost"), *headers],
            "client": ("127.0.0.1", 50000),
            "server": ("localhost", 80),
        }
        self.app = ApplicationCommunicator(application, scope)
        self.status = 0
        self.headers: dict[bytes, bytes] = {}
        self.buffer = b""

    async def open(self) -> None:
        await self.app.send_input({"type": "http.request", "body": b"", "more_body": False})
        start = await self.app.receive_output(WAIT)
        assert start["type"] == "http.response.start"
        self.status = start["status"]
        self.headers = dict(start["headers"])

    async def next_block(self) -> str:
        """The next SSE block (an event or a comment), without its blank line."""
        while b"\n\n" not in self.buffer:
            message = await self.app.receive_output(WAIT)
            assert message["type"] == "http.response.body", message
            self.buffer += message.get("body", b"")
        block, self.buffer = self.buffer.split(b"\n\n", 1)
        return block.decode()

    async def next_event(self) -> tuple[str, dict[str, Any]]:
        block = await self.next_block()
        while block.startswith(":"):
            block = await self.next_block()
        kind_line, data_line = block.split("\n")
        assert kind_line.startswith("event: "), block
        assert data_line.startswith("data: "), block
        return kind_line.removeprefix("event: "), json.loads(data_line.removeprefix("data: "))

    async def leave(self) -> None:
        await self.app.send_input({"type": "http.disconnect"})
        await self.app.wait(WAIT)


@pytest.fixture
async def stream(api_key: str) -> AsyncIterator[Stream]:
    client = Stream([(b"x-api-key", api_key.encode())])
    await client.open()
    yield client
    await client.leave()


async def publish(team: Team, kind: str) -> None:
    await sync_to_async(live.publish)([team.pk], live.event_body(kind))


async def test_the_stream_says_connected_first(stream: Stream) -> None:
    assert stream.status == 200
    assert stream.headers[b"Content-Type"] == b"text/event-stream"
    assert stream.headers[b"Cache-Control"] == b"no-cache"
    kind, body = await stream.next_event()
    assert kind == body["event"] == "connected"
    assert set(body) == {"event", "timestamp"}


async def test_the_stream_carries_its_teams_events_only(stream: Stream, team: Team, other_team: Team) -> None:
    await stream.next_event()  # connected: subscribed from here on
    await publish(other_team, live.CAPSULE_CREATE)
    await publish(team, live.CAPSULE_PAUSE)
    kind, body = await stream.next_event()
    assert (kind, body["event"]) == ("capsule.pause", "capsule.pause")


async def test_a_bearer_token_opens_the_stream_too(member_token: str, team: Team) -> None:
    client = Stream([(b"authorization", f"Bearer {member_token}".encode())])
    await client.open()
    try:
        assert client.status == 200
        assert (await client.next_event())[0] == "connected"
        await publish(team, live.CAPSULE_RESUME)
        assert (await client.next_event())[0] == "capsule.resume"
    finally:
        await client.leave()


async def test_an_idle_stream_sends_keepalive_comments(settings: Any, api_key: str) -> None:
    settings.WRENN_EVENTS_KEEPALIVE_SEC = 0.05
    client = Stream([(b"x-api-key", api_key.encode())])
    await client.open()
    try:
        await client.next_event()
        assert await client.next_block() == ": keepalive"
        assert await client.next_block() == ": keepalive"
    finally:
        await client.leave()


async def test_a_revoked_key_ends_the_stream_at_the_next_keepalive(settings: Any, api_key: str) -> None:
    settings.WRENN_EVENTS_KEEPALIVE_SEC = 0.05
    client = Stream([(b"x-api-key", api_key.encode())])
    await client.open()
    await client.next_event()
    await sync_to_async(revoke_api_keys)(APIKey.objects.filter(name="events"))
    while (block := await client.next_block()) == ": keepalive":
        pass
    assert block == ": credentials no longer valid"
    end = await client.app.receive_output(WAIT)
    assert (end["type"], end.get("more_body", False)) == ("http.response.body", False)
    await client.app.wait(WAIT)


async def test_leaving_ends_the_subscription(api_key: str, team: Team) -> None:
    layer = get_channel_layer()
    group = live.team_group(team.pk)
    client = Stream([(b"x-api-key", api_key.encode())])
    await client.open()
    await client.next_event()
    assert len(layer.groups.get(group, {})) == 1  # the in-memory layer's
    await client.leave()
    assert len(layer.groups.get(group, {})) == 0


def test_the_stream_needs_credentials(team: Team) -> None:
    response = Client().get(STREAM)
    assert response.status_code == 401
    assert response.json() == error(
        "unauthorized", "missing credentials: send X-API-Key or Authorization: Bearer"
    )
    assert "Bearer" in response["WWW-Authenticate"]


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ({"HTTP_X_API_KEY": "wrn_" + "0" * 40}, "invalid API key"),
        ({"HTTP_AUTHORIZATION": "Basic abc"}, "Authorization must be 'Bearer <token>'"),
        ({"HTTP_AUTHORIZATION": "Bearer not-a-token"}, "token is invalid"),
    ],
    ids=["unknown key", "not bearer", "bad token"],
)
def test_refused_credentials_are_401_with_the_reason(
    team: Team, header: dict[str, str], message: str
) -> None:
    response = Client().get(STREAM, **header)  # type: ignore[arg-type]
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    assert message in response.json()["error"]["message"]


def test_only_get_is_allowed(api_key: str) -> None:
    response = Client().post(STREAM, HTTP_X_API_KEY=api_key)
    assert (response.status_code, response["Allow"]) == (405, "GET")
    assert response.json()["error"]["code"] == "method_not_allowed"


async def test_a_stream_under_the_api_prefix_is_the_same(api_key: str) -> None:
    client = Stream([(b"x-api-key", api_key.encode())])
    client.app.scope["path"] = "/api" + STREAM
    await client.open()
    try:
        assert (await client.next_event())[0] == "connected"
    finally:
        await client.leave()
