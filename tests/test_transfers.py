"""wrenn/transfers.py in one process: which requests get their body taken, and which pass."""

from __future__ import annotations

from typing import Any

import pytest

from previews.middleware import for_previews
from wrenn.transfers import BODY, Transfers

# Generous: the last test file of a run also pays for stopping the session's shared host agent.
pytestmark = pytest.mark.timeout(60)


def upload_scope(
    host: bytes, path: str = "/v1/capsules/cl-0123456789abcdef0123/files/write"
) -> dict[str, Any]:
    return {"type": "http", "method": "POST", "path": path, "headers": [(b"host", host)]}


async def run(scope: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The scope the wrapped app got, and what its `receive` gave it."""
    seen: dict[str, Any] = {}
    received: list[dict[str, Any]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.update(scope)
        received.append(await receive())

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"the capsule's own body", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        return None

    await Transfers(app, passes=for_previews)(scope, receive, send)
    return seen, received


async def test_an_upload_to_the_api_has_its_body_taken_for_the_view() -> None:
    seen, received = await run(upload_scope(b"127.0.0.1:8000"))
    assert BODY in seen["extensions"]
    assert received == [{"type": "http.request", "body": b"", "more_body": False}]


async def test_a_preview_request_with_an_upload_s_path_keeps_its_body() -> None:
    """A capsule's own app may serve any path; its request body is the capsule's to read."""
    seen, received = await run(upload_scope(b"3000-cl-0123456789abcdef0123.localhost:8000"))
    assert BODY not in (seen.get("extensions") or {})
    assert received == [{"type": "http.request", "body": b"the capsule's own body", "more_body": False}]


async def test_a_malformed_preview_host_passes_too() -> None:
    seen, received = await run(upload_scope(b"03000-cl-0123456789abcdef0123.localhost:8000"))
    assert BODY not in (seen.get("extensions") or {})
    assert received[0]["body"] == b"the capsule's own body"
