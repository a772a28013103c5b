"""Headless Chromium for the browser tests: the Debian package, offline, a fresh profile per test."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, ViewportSize, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
# Keep Chromium off the network apart from the stack under test, and away from GPU/sandbox
# features a container lacks.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT: ViewportSize = {"width": 1200, "height": 720}


@pytest.fixture
def chromium_page(tmp_path: Path) -> Iterator[Page]:
    """A page in a fresh Chromium profile; Playwright never downloads a browser of its own."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: install the Debian package `chromium` to run browser tests")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=str(CHROMIUM),
            args=CHROMIUM_ARGS,
            headless=True,
            viewport=VIEWPORT,
        )
        context.set_default_timeout(30_000)
        try:
            yield context.pages[0] if context.pages else context.new_page()
        finally:
            context.close()
