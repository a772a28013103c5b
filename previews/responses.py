"""What the proxy answers itself: errors as the API shapes them (or a short page for a browser),
the redirect that trades a link's token for a cookie, and the WebSocket refusals."""

from __future__ import annotations

import html
import json
from typing import Any

from previews.access import Denied

Send = Any
Headers = list[tuple[bytes, bytes]]
REASONS = {
    302: "Found",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    409: "Conflict",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


def wants_html(headers: dict[bytes, str]) -> bool:
    accept = headers.get(b"accept", "")
    return "text/html" in accept and "application/json" not in accept


async def send_error(send: Send, denied: Denied, headers: dict[bytes, str]) -> None:
    """The error as `{"error": {"code", "message"}}`, or as a page when a browser asks for HTML."""
    if wants_html(headers):
        title = f"{denied.status} {REASONS.get(denied.status, '')}".strip()
        body = (
            f"<!doctype html><meta charset=utf-8><title>{title}</title>"
            f"<h1>{title}</h1><p>{html.escape(denied.message)}</p>"
        ).encode()
        content_type = b"text/html; charset=utf-8"
    else:
        body = json.dumps({"error": {"code": denied.code, "message": denied.message}}).encode()
        content_type = b"application/json"
    response_headers: Headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
    ]
    if denied.status == 401:
        response_headers.append((b"www-authenticate", b'Bearer realm="preview", ApiKey realm="preview"'))
    await send({"type": "http.response.start", "status": denied.status, "headers": response_headers})
    await send({"type": "http.response.body", "body": body})


async def send_redirect(send: Send, location: str, cookie: str) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 302,
            "headers": [
                (b"location", location.encode("latin1")),
                (b"set-cookie", cookie.encode("latin1")),
                (b"cache-control", b"no-store"),
                (b"referrer-policy", b"no-referrer"),
                (b"content-length", b"0"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": b""})


async def refuse_websocket(send: Send, denied: Denied) -> None:
    """Refuse the handshake with the HTTP status and the error body (ASGI's denial response,
    which daphne supports), so a client learns why rather than seeing a bare 403."""
    body = json.dumps({"error": {"code": denied.code, "message": denied.message}}).encode()
    await send(
        {
            "type": "websocket.http.response.start",
            "status": denied.status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "websocket.http.response.body", "body": body})
