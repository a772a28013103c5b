"""One WebSocket through a preview: the proxy is a WebSocket client of the capsule's server (the
`websockets` package's sans-I/O protocol over the agent's byte stream) and relays text and binary
messages and close codes both ways.

Bounded: a message from the capsule is at most MAX_MESSAGE bytes (bigger closes with 1009), and
is sent to the client only when daphne's transport has room (wrenn/flow.py's window), so a fast
server and a slow client hold the relay, not memory. What let the client in is asked again every
WRENN_PREVIEW_CREDENTIAL_CHECK_SECONDS: a revoked link (or key, or session) closes the socket
with 1008 within that time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from django.conf import settings
from websockets.client import ClientProtocol
from websockets.datastructures import Headers as WsHeaders
from websockets.exceptions import InvalidHandshake
from websockets.frames import Close, Frame, Opcode
from websockets.http11 import Response
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

from previews.access import Access, Denied, headers_of
from previews.hosts import PreviewTarget
from previews.http import filter_cookie_header, request_target
from previews.responses import refuse_websocket
from previews.upstream import Upstream
from wrenn.flow import close_with, send_window

log = logging.getLogger(__name__)

Scope = dict[str, Any]
MAX_MESSAGE = 4 * 1024 * 1024
# Close codes a peer may send in a close frame (RFC 6455 7.4; 1005, 1006 and 1015 may not).
SENDABLE = {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014}
# Request headers the capsule's server is told about, beside those of the handshake itself.
PASSED_HEADERS = (b"origin", b"user-agent", b"accept-language", b"cookie")
# What still lets the client in, asked again every few seconds: None, or why not any more.
Recheck = Callable[[], Awaitable[Denied | None]]


class Closed(Exception):
    """The relay is over; the socket to the client has been closed (or is gone)."""


def sendable(code: int | None) -> bool:
    return code is not None and (code in SENDABLE or 3000 <= code <= 4999)


async def close_client(scope: Scope, send: Any, code: int, reason: str) -> None:
    # daphne's own close takes only 1000 and 3000-4999; wrenn.flow closes with any code.
    if not close_with(scope, code, reason):
        await send(
            {"type": "websocket.close", "code": code if code == 1000 or code >= 3000 else 4000 + code % 1000}
        )


class Relay:
    def __init__(
        self, scope: Scope, receive: Any, send: Any, upstream: Upstream, protocol: ClientProtocol
    ) -> None:
        self.scope = scope
        self.receive = receive
        self.send = send
        self.upstream = upstream
        self.protocol = protocol

    async def flush(self) -> None:
        """Send what the protocol has for the capsule's server (frames, pongs, the close reply)."""
        for data in self.protocol.data_to_send():
            if data:
                await self.upstream.send(data)
            else:
                await self.upstream.close_write()

    async def handshake(self) -> Response:
        while True:
            for event in self.protocol.events_received():
                if isinstance(event, Response):
                    if self.protocol.handshake_exc is not None:
                        raise Denied(
                            502,
                            "bad_gateway",
                            f"the capsule's server refused the WebSocket: {self.protocol.handshake_exc}",
                        )
                    return event
            data = await self.upstream.receive()
            if data:
                self.protocol.receive_data(data)
            else:
                self.protocol.receive_eof()
                if self.protocol.handshake_exc is None:
                    raise Denied(
                        502, "bad_gateway", "the capsule's server closed before answering the WebSocket"
                    )

    async def from_client(self) -> None:
        while True:
            message = await self.receive()
            if message["type"] == "websocket.disconnect":
                code = message.get("code")
                self.protocol.send_close(code if sendable(code) else None, message.get("reason") or "")
                await self.flush()
                raise Closed
            if message["type"] != "websocket.receive":
                continue
            if message.get("text") is not None:
                self.protocol.send_text(message["text"].encode())
            else:
                self.protocol.send_binary(message.get("bytes") or b"")
            await self.flush()

    async def from_capsule(self) -> None:
        window = send_window(self.scope)
        parts: list[bytes] = []
        kind: Opcode | None = None
        while True:
            data = await self.upstream.receive()
            if data:
                self.protocol.receive_data(data)
            else:
                self.protocol.receive_eof()
            for event in self.protocol.events_received():
                if not isinstance(event, Frame):
                    continue
                if event.opcode in (Opcode.TEXT, Opcode.BINARY):
                    kind, parts = event.opcode, [bytes(event.data)]
                elif event.opcode is Opcode.CONT:
                    parts.append(bytes(event.data))
                elif event.opcode is Opcode.CLOSE:
                    await self.flush()
                    await self._close_from_capsule(self.protocol.close_rcvd)
                    raise Closed
                else:
                    continue  # pings are answered by the protocol, pongs need nothing
                if event.fin and kind is not None:
                    if window is not None:
                        await window.wait()  # the client is behind: stop reading the capsule
                    payload = b"".join(parts)
                    if kind is Opcode.TEXT:
                        await self.send({"type": "websocket.send", "text": payload.decode()})
                    else:
                        await self.send({"type": "websocket.send", "bytes": payload})
                    kind, parts = None, []
            await self.flush()
            if not data:
                await self._close_from_capsule(self.protocol.close_rcvd)
                raise Closed

    async def _close_from_capsule(self, close: Close | None) -> None:
        if close is None:
            await close_client(self.scope, self.send, 1011, "the capsule's server closed the connection")
        elif close.code == 1005:  # sent with no code: the client gets a plain close
            await close_client(self.scope, self.send, 1000, close.reason)
        else:
            await close_client(self.scope, self.send, close.code, close.reason)

    async def watch(self, recheck: Recheck) -> None:
        interval = float(settings.WRENN_PREVIEW_CREDENTIAL_CHECK_SECONDS)
        while True:
            await asyncio.sleep(interval)
            denied = await recheck()
            if denied is not None:
                log.info("closing a preview WebSocket: %s", denied.message)
                self.protocol.send_close(1001, "the preview's credentials no longer hold")
                await self.flush()
                await close_client(self.scope, self.send, 1008, denied.message)
                raise Closed


def upstream_request(protocol: ClientProtocol, scope: Scope) -> Any:
    request = protocol.connect()
    headers = headers_of(scope)
    passed = WsHeaders()
    for name in PASSED_HEADERS:
        value = headers.get(name)
        if name == b"cookie" and value is not None:
            value = filter_cookie_header(value)
        if value:
            passed[name.decode()] = value
    client = scope.get("client")
    if client:
        passed["X-Forwarded-For"] = str(client[0])
    request.headers.update(passed)
    return request


async def proxy_websocket(
    scope: Scope, receive: Any, send: Any, access: Access, target: PreviewTarget, recheck: Recheck
) -> None:
    """Relay the (already authorized) WebSocket, whose `websocket.connect` has been received."""
    try:
        upstream = await Upstream.connect(access.host_address, access.sandbox_id, access.port)
    except Denied as denied:
        await refuse_websocket(send, denied)
        return
    # The link's token, if it came as a parameter, is the platform's: the capsule never sees it.
    resource = request_target(scope).decode("latin1")
    subprotocols = [Subprotocol(s) for s in scope.get("subprotocols") or []]
    protocol = ClientProtocol(
        parse_uri(f"ws://{target.host}{resource}"), subprotocols=subprotocols or None, max_size=MAX_MESSAGE
    )
    relay = Relay(scope, receive, send, upstream, protocol)
    try:
        protocol.send_request(upstream_request(protocol, scope))
        await relay.flush()
        try:
            response = await relay.handshake()
        except (Denied, InvalidHandshake) as exc:
            refusal = exc if isinstance(exc, Denied) else Denied(502, "bad_gateway", str(exc))
            await refuse_websocket(send, refusal)
            return
        await send(
            {"type": "websocket.accept", "subprotocol": response.headers.get("Sec-WebSocket-Protocol")}
        )
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(relay.from_client())
                group.create_task(relay.from_capsule())
                group.create_task(relay.watch(recheck))
        except* Closed:
            pass
        except* Denied as errors:
            first = errors.exceptions[0]
            message = first.message if isinstance(first, Denied) else str(first)
            log.info("preview WebSocket of %s:%d failed: %s", access.sandbox_id, access.port, message)
            await close_client(scope, send, 1011, message)
    finally:
        upstream.close()
