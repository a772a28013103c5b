"""A preview in Chromium on the real stack, as `make run` offers it: signed in on the app, the
preview page sends the browser to `{port}-{capsule}.localhost`, which Chromium resolves to
loopback by itself; the link becomes a cookie there, relative links and the page's own WebSocket
work on it, and the capsule never sees the app's session."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Page

from tests.integration.test_previews import PORT, api, start_server
from tests.support.stack import Stack

pytestmark = [pytest.mark.timeout(180)]

ECHO = """async () => {
  const socket = new WebSocket(`ws://${location.host}/ws`);
  await new Promise((resolve, reject) => { socket.onopen = resolve; socket.onerror = reject; });
  const answer = new Promise((resolve) => { socket.onmessage = (event) => resolve(event.data); });
  socket.send("from the page");
  const data = await answer;
  socket.close();
  return data;
}"""


@pytest.fixture
def capsule(stack: Stack, demo: dict[str, Any]) -> Iterator[str]:
    code, body = api(stack, demo["api_key"], "POST", "/v1/capsules", {"timeout_sec": 0})
    assert code == 201, body
    # In a thread of its own: Playwright's sync API keeps an event loop running in this one.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, start_server(stack, demo["api_key"], body["id"])).result()
    yield body["id"]
    api(stack, demo["api_key"], "DELETE", f"/v1/capsules/{body['id']}")


def test_a_signed_in_member_opens_a_preview_in_the_browser(
    chromium_page: Page, stack: Stack, demo: dict[str, Any], capsule: str
) -> None:
    page = chromium_page
    preview_path = f"/capsules/{capsule}/preview/{PORT}/"
    page.goto(f"{stack.base_url}/admin/login/?next={preview_path}")
    page.fill("#id_username", demo["username"])
    page.fill("#id_password", demo["password"])
    page.click("input[type=submit]")
    preview_host = f"{PORT}-{capsule}.localhost:{stack.port}"
    page.wait_for_url(f"http://{preview_host}/")
    assert page.text_content("h1") == "preview server"
    # The token was traded for a cookie of the preview host, and is gone from the address.
    assert "wrenn_preview_token" not in page.url
    cookies = {c["name"]: c for c in page.context.cookies(f"http://{preview_host}/")}
    assert cookies["wrenn_preview"]["httpOnly"]
    # A relative link rides on that cookie; the capsule sees neither it nor the app's session.
    page.click("a")
    page.wait_for_url(f"http://{preview_host}/headers")
    seen = (page.text_content("body") or "").lower()
    assert seen.startswith("get /headers http/1.1")
    assert "wrenn_preview" not in seen
    assert "sessionid" not in seen
    # The page's own WebSocket is let in on the cookie (its Origin is the preview's).
    assert page.evaluate(ECHO) == "from the page"
    assert urlsplit(page.url).hostname == f"{PORT}-{capsule}.localhost"
