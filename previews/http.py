"""One HTTP request through a preview: HTTP/1.1 to the capsule's server (h11), streamed both ways.

The request body goes up chunk by chunk as daphne hands it over, the response comes down chunk by
chunk, each sent only when daphne's transport has room (a producer on daphne's request, as
wrenn/flow.py does for WebSockets): one chunk or two in memory, whatever the sizes. One
connection per request (`Connection: close`): a preview is not a hot path, and a connection never
outlives the credentials that opened it.

What the capsule never sees: the caller's `X-API-Key`, a Bearer `Authorization`, the session,
CSRF and preview cookies. What the browser never gets from the capsule: a cookie for a whole
domain (it could reach other previews or the app) or one named like the platform's.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from typing import Any
from urllib.parse import unquote_plus

import h11
from django.conf import settings

from previews.access import TOKEN_PARAM, Access, Denied, headers_of, is_secure, link_cookie_name
from previews.hosts import PreviewTarget
from previews.responses import send_error, send_redirect
from previews.upstream import Upstream
from wrenn.flow import SendWindow

log = logging.getLogger(__name__)

Scope = dict[str, Any]
Headers = list[tuple[bytes, bytes]]
HOP_BY_HOP = {
    b"connection",
    b"keep-alive",
    b"proxy-connection",
    b"proxy-authenticate",
    b"proxy-authorization",
    b"te",
    b"trailer",
    b"transfer-encoding",
    b"upgrade",
}
# The largest head (status line and headers) of a capsule's response that is read.
MAX_RESPONSE_HEAD = 64 * 1024


def platform_cookies() -> set[str]:
    return {
        settings.SESSION_COOKIE_NAME,
        settings.CSRF_COOKIE_NAME,
        link_cookie_name(False),
        link_cookie_name(True),
    }


def filter_cookie_header(value: str) -> str:
    """The Cookie header without the platform's cookies (each `name=value` kept as written)."""
    reserved = platform_cookies()
    kept = [part.strip() for part in value.split(";") if part.strip()]
    return "; ".join(p for p in kept if p.split("=", 1)[0].strip() not in reserved)


def query_without_token(scope: Scope) -> str:
    """The query string as sent, less the preview token's parameter (the rest byte for byte)."""
    query = bytes(scope.get("query_string") or b"").decode("latin1")
    kept = [part for part in query.split("&") if unquote_plus(part.split("=", 1)[0]) != TOKEN_PARAM]
    return "&".join(part for part in kept if part)


def request_target(scope: Scope) -> bytes:
    """Path and query for the capsule's server: never with a preview token in it."""
    path = scope.get("raw_path") or scope["path"].encode("utf-8")
    query = query_without_token(scope)
    return bytes(path) + (b"?" + query.encode("latin1") if query else b"")


def forwarded_headers(scope: Scope, secure: bool) -> Headers:
    """The request's headers as the capsule's server gets them."""
    connection_named = set()
    for key, value in scope.get("headers") or []:
        if key == b"connection":
            connection_named |= {t.strip().lower().encode() for t in bytes(value).decode("latin1").split(",")}
    headers: Headers = []
    chunked = False
    has_length = False
    for key, value in scope.get("headers") or []:
        key = bytes(key).lower()
        if key == b"transfer-encoding":
            chunked = True
        if key in HOP_BY_HOP or key in connection_named or key == b"x-api-key":
            continue
        if key == b"authorization" and bytes(value).strip().lower().startswith(b"bearer"):
            continue
        if key == b"cookie":
            value = filter_cookie_header(bytes(value).decode("latin1")).encode("latin1")
            if not value:
                continue
        if key == b"content-length":
            has_length = True
        headers.append((key, bytes(value)))
    if chunked and not has_length:
        headers.append((b"transfer-encoding", b"chunked"))
    client = scope.get("client")
    if client:
        headers.append((b"x-forwarded-for", str(client[0]).encode("latin1")))
    headers.append((b"x-forwarded-proto", b"https" if secure else b"http"))
    headers.append((b"connection", b"close"))
    return headers


def _set_cookie_allowed(value: bytes) -> bool:
    """A capsule may set host-only cookies of its own; not a domain cookie, nor the platform's."""
    text = value.decode("latin1")
    name = text.split("=", 1)[0].strip()
    attributes = [a.strip().split("=", 1)[0].strip().lower() for a in text.split(";")[1:]]
    return name not in platform_cookies() and "domain" not in attributes


def response_headers(response: h11.Response) -> Headers:
    connection_named = set()
    for key, value in response.headers:
        if key == b"connection":
            connection_named |= {t.strip().lower().encode() for t in value.decode("latin1").split(",")}
    headers: Headers = []
    for key, value in response.headers:
        if key in HOP_BY_HOP or key in connection_named:
            continue
        if key == b"set-cookie" and not _set_cookie_allowed(value):
            log.info("dropped a Set-Cookie header of a preview: domain-wide or the platform's name")
            continue
        headers.append((bytes(key), bytes(value)))
    return headers


def http_window(send: Any) -> tuple[SendWindow | None, Any]:
    """A send window on daphne's HTTP request (see wrenn/flow.py), and the request to detach it
    from; (None, None) under another server, which then sends without one."""
    request = send.args[0] if isinstance(send, functools.partial) and send.args else None
    if request is None or not hasattr(request, "registerProducer") or getattr(request, "producer", None):
        return None, None
    window = SendWindow()
    request.registerProducer(window, True)
    return window, request


def cut_short(send: Any) -> bool:
    """Drop the client's connection mid-response (daphne's transport, as `http_window` finds it),
    so that a body the capsule broke off is not taken for a whole one (ASGI can only end a
    response cleanly); whether it could."""
    request = send.args[0] if isinstance(send, functools.partial) and send.args else None
    transport = getattr(getattr(request, "channel", None), "transport", None)
    if transport is None or not hasattr(transport, "loseConnection"):
        return False
    transport.loseConnection()  # what was sent still arrives, then the end, short of the whole
    return True


def release_window(request: Any) -> None:
    """Unregister the window's producer, unless the client left (Twisted then dropped the
    request's channel, and the producer with it)."""
    if request is not None and getattr(request, "channel", None) is not None and request.producer:
        request.unregisterProducer()


async def exchange_link(scope: Scope, send: Any, access: Access, target: PreviewTarget) -> None:
    """A link's first visit: its token becomes a cookie of this preview host, and the browser is
    sent to the same address without it (so it is not left in the history, nor sent on)."""
    headers = headers_of(scope)
    secure = is_secure(scope, headers)
    name = link_cookie_name(secure)
    cookie = f"{name}={access.link_token}; Path=/; Max-Age={access.link_seconds_left}; HttpOnly; SameSite=Lax"
    if secure:
        cookie += "; Secure"
    path = scope.get("raw_path") or scope["path"].encode()
    query = query_without_token(scope)
    location = bytes(path).decode("latin1") + (f"?{query}" if query else "")
    await send_redirect(send, location, cookie)


class ClientGone(Exception):
    """The client disconnected before the response was over."""


class Exchange:
    """One request's relay: its h11 connection to the capsule's server, and what was sent back."""

    def __init__(self, scope: Scope, receive: Any, send: Any, upstream: Upstream) -> None:
        self.scope = scope
        self.receive = receive
        self.send = send
        self.upstream = upstream
        self.connection = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_RESPONSE_HEAD)
        # Once the response's status is out, an error can only cut the body short.
        self.started = False

    async def _write(self, event: h11.Event) -> None:
        data = self.connection.send(event)
        if data:
            await self.upstream.send(data)

    async def send_request(self, request: h11.Request) -> None:
        """The head, then the body as daphne hands it over, then its end. No half-close: with
        `Connection: close` the server closes after its answer, and some take an early EOF as
        the client gone."""
        await self._write(request)
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunk = message.get("body", b"")
            if chunk:
                await self._write(h11.Data(data=chunk))
            if not message.get("more_body", False):
                break
        await self._write(h11.EndOfMessage())

    async def relay_response(self) -> None:
        window, request = http_window(self.send)
        try:
            while True:
                event = self.connection.next_event()
                if event is h11.NEED_DATA:
                    data = await self.upstream.receive()
                    self.connection.receive_data(data)
                    # At b"" (the server closed): a body delimited by the close ends here; one
                    # that ends early makes h11 raise, and the client's response is cut short.
                    continue
                if isinstance(event, h11.InformationalResponse):
                    continue  # 100 Continue and the like are between the two HTTP hops
                if isinstance(event, h11.Response):
                    await self.send(
                        {
                            "type": "http.response.start",
                            "status": event.status_code,
                            "headers": response_headers(event),
                        }
                    )
                    self.started = True
                elif isinstance(event, h11.Data):
                    if window is not None:
                        await window.wait()  # the client is behind: stop reading the capsule
                    await self.send(
                        {"type": "http.response.body", "body": bytes(event.data), "more_body": True}
                    )
                elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                    break
        finally:
            release_window(request)
        await self.send({"type": "http.response.body", "body": b""})


async def _watch_disconnect(receive: Any) -> None:
    """After the request body: wait for the client to leave, which ends the relay."""
    while (await receive())["type"] != "http.disconnect":
        pass
    raise ClientGone


async def proxy_http(scope: Scope, receive: Any, send: Any, access: Access) -> None:
    headers = headers_of(scope)
    try:
        upstream = await Upstream.connect(access.host_address, access.sandbox_id, access.port)
    except Denied as denied:
        await send_error(send, denied, headers)
        return
    exchange = Exchange(scope, receive, send, upstream)
    request = h11.Request(
        method=scope["method"],
        target=request_target(scope),
        headers=forwarded_headers(scope, is_secure(scope, headers)),
    )
    failure: Denied | None = None
    try:

        async def upload_then_watch() -> None:
            await exchange.send_request(request)
            await _watch_disconnect(receive)

        async with asyncio.TaskGroup() as group:
            uploading = group.create_task(upload_then_watch())
            await exchange.relay_response()
            uploading.cancel()
    except* Denied as errors:
        failure = errors.exceptions[0]  # type: ignore[assignment]
    except* h11.ProtocolError as errors:
        failure = Denied(
            502, "bad_gateway", f"the capsule's server answered with broken HTTP: {errors.exceptions[0]}"
        )
    except* ClientGone:
        pass  # nobody is left to answer
    finally:
        upstream.close()
    if failure is not None:
        log.info("preview of %s:%d failed: %s", access.sandbox_id, access.port, failure.message)
        if not exchange.started:
            await send_error(send, failure, headers)
        elif not cut_short(send):
            with contextlib.suppress(Exception):
                # Under a server other than daphne: the response ends here, as it can.
                await send({"type": "http.response.body", "body": b""})
