"""Refusing a WebSocket handshake with an HTTP status under daphne: ASGI's ``websocket.http.response``.

An application that refuses a WebSocket before accepting it can only close it, and daphne answers
every such close with 403 (and an application's exception with 500, after logging its traceback).
The ASGI spec lets a server offer the ``websocket.http.response`` extension, with which the
application sends an HTTP response instead (``websocket.http.response.start`` with the status,
then ``websocket.http.response.body``). daphne 4 does not offer it; this middleware does, for the
status: it fails daphne's handshake with that status and its standard reason phrase (autobahn
writes the status line and no headers or body of the application's).

daphne's protocol is found in the ``send`` it made (as in wrenn/flow.py). Under another server,
or a daphne that changes this, the extension is left as the server offers it, and applications
that find it missing close the socket instead (a 403 under daphne).
"""

from __future__ import annotations

import functools
from http import HTTPStatus
from typing import Any

from autobahn.websocket.types import ConnectionDeny
from daphne.ws_protocol import WebSocketProtocol

DENIAL = "websocket.http.response"
START = "websocket.http.response.start"
BODY = "websocket.http.response.body"


def daphne_protocol(send: Any) -> WebSocketProtocol | None:
    """The daphne protocol of the WebSocket that ``send`` answers, if daphne made ``send``."""
    if not isinstance(send, functools.partial) or not send.args:
        return None
    protocol = send.args[0]
    return protocol if isinstance(protocol, WebSocketProtocol) else None


def deny(protocol: WebSocketProtocol, status: int) -> None:
    """Fail the handshake of `protocol` with `status`, as daphne fails it with 403 on a close."""
    deferred = getattr(protocol, "handshake_deferred", None)
    if deferred is None:
        raise RuntimeError(f"{START} after websocket.accept: the handshake is over")
    details = protocol.server.connections.get(protocol, {})
    if details.get("disconnected"):
        return  # the client left before the answer; nobody reads it
    del protocol.handshake_deferred
    deferred.errback(ConnectionDeny(code=status, reason=HTTPStatus(status).phrase))
    protocol.server.protocol_disconnected(protocol)
    client = protocol.client_addr
    protocol.server.log_action(
        "websocket",
        "rejected",
        {"path": protocol.request.path, "client": f"{client[0]}:{client[1]}" if client else None},
    )


def _error_status(status: Any) -> int:
    if isinstance(status, int) and 400 <= status <= 599:
        try:
            return HTTPStatus(status).value
        except ValueError:
            pass
    raise ValueError(f"{START} needs an HTTP error status (400-599), got {status!r}")


class DenyingSend:
    """``send`` with the extension: a response's start and body become one denial of the handshake."""

    def __init__(self, protocol: WebSocketProtocol, send: Any) -> None:
        self.protocol = protocol
        self.send = send
        self.status: int | None = None

    async def __call__(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == START:
            self.status = _error_status(message.get("status"))
        elif kind == BODY:
            if self.status is None:
                raise RuntimeError(f"{BODY} before {START}")
            if not message.get("more_body", False):
                deny(self.protocol, self.status)
        else:
            await self.send(message)


class DenialMiddleware:
    """Offers ``websocket.http.response`` on daphne's WebSocket scopes; outermost but for
    FlowMiddleware, which needs daphne's own ``send`` too."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        extensions = scope.get("extensions") or {}
        protocol = (
            daphne_protocol(send) if scope["type"] == "websocket" and DENIAL not in extensions else None
        )
        if protocol is None:
            return await self.app(scope, receive, send)
        scope = dict(scope, extensions={**extensions, DENIAL: {}})
        return await self.app(scope, receive, DenyingSend(protocol, send))


async def refuse(scope: dict[str, Any], send: Any, status: int, text: str) -> None:
    """Refuse the handshake with `status` where the server lets us (else close, a 403 in daphne)."""
    if DENIAL in (scope.get("extensions") or {}):
        await send({"type": START, "status": status, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": BODY, "body": text.encode()})
    else:
        await send({"type": "websocket.close"})
