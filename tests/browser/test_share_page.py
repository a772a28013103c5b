"""Share links, observers and the roster in Chromium on the real stack: a share link's page watches
a session without a login and is closed when its link is revoked; `?tag=…&mode=observer` watches,
a peer hands control over from the status bar, and `?new=1` starts a new session."""

from __future__ import annotations

import http.client
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import BrowserContext, Page, sync_playwright

from shares import links as share_links
from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS, VIEWPORT
from tests.browser.test_terminal_page import log_in, run, screen, wait_for_screen, wait_for_state

pytestmark = [pytest.mark.timeout(240)]


@pytest.fixture
def contexts(tmp_path: Path) -> Iterator[tuple[BrowserContext, BrowserContext]]:
    """Two browser profiles: the team member's, and a guest's that never signs in."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: install the Debian package `chromium` to run browser tests")
    with sync_playwright() as playwright:
        made = [
            playwright.chromium.launch_persistent_context(
                str(tmp_path / name),
                executable_path=str(CHROMIUM),
                args=CHROMIUM_ARGS,
                headless=True,
                viewport=VIEWPORT,
            )
            for name in ("member", "guest")
        ]
        for context in made:
            context.set_default_timeout(30_000)
        try:
            yield made[0], made[1]
        finally:
            for context in made:
                context.close()


def page_of(context: BrowserContext) -> Page:
    return context.pages[0] if context.pages else context.new_page()


def api(stack: Any, key: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=60)
    try:
        headers = {"X-API-Key": key, "Content-Type": "application/json"}
        connection.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
        response = connection.getresponse()
        raw = response.read()
        return response.status, json.loads(raw) if raw else None
    finally:
        connection.close()


def viewers(page: Page) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = page.evaluate("window.wrennTerminal.viewers()")
    return found


def test_a_share_link_watches_without_login_until_revoked(
    stack: Any, demo: dict[str, Any], contexts: tuple[BrowserContext, BrowserContext]
) -> None:
    member_context, guest_context = contexts
    member = page_of(member_context)
    log_in(member, stack.base_url, demo)
    member.goto(f"{stack.base_url}{demo['terminal_path']}?new=1")
    wait_for_state(member, "connected")
    member.wait_for_function("window.wrennTerminal.viewers().length === 1")
    tag = member.evaluate("window.wrennTerminal.tag()")
    assert member.url.endswith(f"?tag={tag}")  # a reload reconnects rather than starting again
    member.click("#terminal")
    run(member, "echo before-$((1+1))")
    wait_for_screen(member, re.compile(r"before-2"))

    status, link = api(
        stack, demo["api_key"], "POST", f"/v1/capsules/{demo['capsule_id']}/pty/{tag}/shares", {}
    )
    assert status == 201, link
    guest = page_of(guest_context)
    guest.goto(link["url"])
    wait_for_state(guest, "connected")
    assert guest.get_attribute("#mode", "data-mode") == "observer"
    wait_for_screen(guest, re.compile(r"before-2"))  # the recent screen, without a login
    assert guest_context.cookies() == []  # nothing signed it in

    member.bring_to_front()
    member.click("#terminal")
    run(member, "echo live-$((2+3))")
    wait_for_screen(guest, re.compile(r"live-5"))
    guest.bring_to_front()
    guest.click("#terminal")
    run(guest, "echo guest-$((3+4))")
    guest.wait_for_function("document.getElementById('notice').textContent.includes('observer')")
    member.wait_for_function("window.wrennTerminal.viewers().length === 2")
    assert "7" not in re.findall(r"guest-(\d+)", screen(member))
    assert "2 watching" in (member.text_content("#viewers") or "")

    # The member's status bar offers the guest's link to revoke; the guest's page is closed.
    member.bring_to_front()
    member.click(".revoke-link")
    wait_for_state(guest, "error")
    assert share_links.REVOKED in (guest.text_content("#status") or "")
    member.wait_for_function("window.wrennTerminal.viewers().length === 1")

    gone = guest_context.new_page()
    response = gone.goto(link["url"])
    assert response is not None
    assert response.status == 410
    assert share_links.REVOKED in (gone.text_content("#reason") or "")
    response = gone.goto(f"{stack.base_url}/shared/wrs_{'x' * 43}/")
    assert response is not None
    assert response.status == 404


def test_watching_by_tag_and_handing_control_from_the_status_bar(
    stack: Any, demo: dict[str, Any], contexts: tuple[BrowserContext, BrowserContext]
) -> None:
    member_context, _ = contexts
    first = page_of(member_context)
    log_in(first, stack.base_url, demo)
    first.goto(f"{stack.base_url}{demo['terminal_path']}?new=1")
    wait_for_state(first, "connected")
    tag = first.evaluate("window.wrennTerminal.tag()")
    first.click("#terminal")
    run(first, "echo first-$((4+4))")
    wait_for_screen(first, re.compile(r"first-8"))

    watcher = member_context.new_page()
    watcher.goto(f"{stack.base_url}{demo['terminal_path']}?tag={tag}&mode=observer")
    wait_for_state(watcher, "connected")
    watcher.wait_for_function("window.wrennTerminal.viewers().length === 2")
    assert watcher.evaluate("window.wrennTerminal.mode()") == "observer"
    wait_for_screen(watcher, re.compile(r"first-8"))
    size_before = first.evaluate("[window.wrennTerminal.term.rows, window.wrennTerminal.term.cols]")

    first.bring_to_front()
    first.wait_for_selector(".hand-control")
    first.click(".hand-control")
    watcher.wait_for_function("window.wrennTerminal.mode() === 'peer'")
    watcher.bring_to_front()
    watcher.click("#terminal")
    run(watcher, "echo handed-$((5+5))")
    wait_for_screen(first, re.compile(r"handed-10"))
    assert size_before == first.evaluate("[window.wrennTerminal.term.rows, window.wrennTerminal.term.cols]")

    # ?new=1 starts another session rather than reconnecting to the tab's last.
    fresh = member_context.new_page()
    fresh.goto(f"{stack.base_url}{demo['terminal_path']}?new=1")
    wait_for_state(fresh, "connected")
    fresh.wait_for_function("window.wrennTerminal.viewers().length === 1")
    assert fresh.evaluate("window.wrennTerminal.tag()") != tag


def test_a_signed_in_person_on_a_share_page_watches_as_the_link(
    stack: Any, demo: dict[str, Any], contexts: tuple[BrowserContext, BrowserContext]
) -> None:
    """The link's auth frame wins over the session cookie the browser sends with the socket."""
    member_context, _ = contexts
    member = page_of(member_context)
    log_in(member, stack.base_url, demo)
    member.goto(f"{stack.base_url}{demo['terminal_path']}?new=1")
    wait_for_state(member, "connected")
    tag = member.evaluate("window.wrennTerminal.tag()")
    shares = f"/v1/capsules/{demo['capsule_id']}/pty/{tag}/shares"
    status, link = api(stack, demo["api_key"], "POST", shares, {"expires_in": 300})
    assert status == 201, link
    shared = member_context.new_page()
    shared.goto(link["url"])
    shared.wait_for_function("window.wrennTerminal.viewers().length === 2")
    me = shared.evaluate(
        "window.wrennTerminal.viewers().find((v) => v.id === window.wrennTerminal.viewerId())"
    )
    assert (me["label"], me["mode"], me["link"]) == (f"share:{link['id']}", "observer", True)
