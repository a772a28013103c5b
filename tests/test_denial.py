"""wrenn.denial in process: the extension's messages and their errors, and what an application
sees where no daphne offers the extension (Channels' communicator)."""

from __future__ import annotations

from typing import Any

import pytest
from channels.testing import WebsocketCommunicator

from pty.routing import no_route
from wrenn.denial import DENIAL, DenialMiddleware, DenyingSend, refuse

pytestmark = [pytest.mark.timeout(30)]


class Sent:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    async def __call__(self, message: dict[str, Any]) -> None:
        self.messages.append(message)


async def test_without_daphne_the_extension_is_not_offered() -> None:
    seen: dict[str, Any] = {}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen["extensions"] = scope.get("extensions")
        await no_route(scope, receive, send)

    communicator = WebsocketCommunicator(DenialMiddleware(app), "/nope")
    assert await communicator.connect(timeout=10) == (False, 1000)
    await communicator.wait(timeout=10)  # the application ended without an exception
    assert DENIAL not in (seen["extensions"] or {})


async def test_refuse_sends_the_response_where_the_extension_is_offered() -> None:
    send = Sent()
    await refuse(
        {"type": "websocket", "extensions": {DENIAL: {}}}, send, 404, "no WebSocket route for this path"
    )
    assert send.messages == [
        {
            "type": "websocket.http.response.start",
            "status": 404,
            "headers": [(b"content-type", b"text/plain")],
        },
        {"type": "websocket.http.response.body", "body": b"no WebSocket route for this path"},
    ]


async def test_refuse_closes_where_it_is_not() -> None:
    send = Sent()
    await refuse({"type": "websocket"}, send, 404, "no WebSocket route for this path")
    assert send.messages == [{"type": "websocket.close"}]


async def test_other_messages_pass_through() -> None:
    send = Sent()
    denying = DenyingSend(protocol=None, send=send)  # never reached
    await denying({"type": "websocket.accept"})
    await denying({"type": "websocket.send", "text": "hi"})
    assert send.messages == [{"type": "websocket.accept"}, {"type": "websocket.send", "text": "hi"}]


@pytest.mark.parametrize("status", [200, 101, 399, 600, 499, "404", None])
async def test_the_status_must_be_an_http_error(status: Any) -> None:
    denying = DenyingSend(protocol=None, send=Sent())
    with pytest.raises(
        ValueError,
        match=rf"^websocket\.http\.response\.start needs an HTTP error status \(400-599\), got {status!r}$",
    ):
        await denying({"type": "websocket.http.response.start", "status": status})


async def test_a_body_needs_a_start() -> None:
    denying = DenyingSend(protocol=None, send=Sent())
    with pytest.raises(
        RuntimeError, match=r"^websocket\.http\.response\.body before websocket\.http\.response\.start$"
    ):
        await denying({"type": "websocket.http.response.body", "body": b""})
