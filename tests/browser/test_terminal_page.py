"""The terminal page in Chromium on the real stack: a command, the window size, a reopened tab."""

import re
import time
from typing import Any
from urllib.parse import urlsplit

from playwright.sync_api import Page
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

# Generous limits against hangs only; the checks poll and return as soon as the text appears.
SCREEN_TIMEOUT = 30.0
CONNECT_TIMEOUT_MS = 30_000

# Every line of the terminal's active buffer, as xterm.js renders it.
READ_SCREEN = """() => {
  const buffer = window.wrennTerminal.term.buffer.active;
  const lines = [];
  for (let i = 0; i < buffer.length; i++) lines.push(buffer.getLine(i).translateToString(true));
  return lines.join("\\n");
}"""
SIZE_LINE = re.compile(r"^size=(\d+) (\d+)\.$", re.MULTILINE)


def screen(page: Page) -> str:
    text: str = page.evaluate(READ_SCREEN)
    return text


def wait_for_screen(page: Page, pattern: re.Pattern[str], after: int = 0) -> re.Match[str]:
    """The first match of `pattern` on screen beyond the first `after` matches."""
    deadline = time.monotonic() + SCREEN_TIMEOUT
    while True:
        matches = list(pattern.finditer(screen(page)))
        if len(matches) > after:
            return matches[after]
        if time.monotonic() > deadline:
            status = page.text_content("#status")
            raise AssertionError(f"{pattern.pattern!r} not on screen (status: {status}):\n{screen(page)}")
        page.wait_for_timeout(100)


def run(page: Page, command: str) -> None:
    page.keyboard.type(command)
    page.keyboard.press("Enter")


def log_in(page: Page, base_url: str, demo: dict[str, Any]) -> None:
    page.goto(f"{base_url}/admin/login/?next={demo['terminal_path']}")
    page.fill("#id_username", demo["username"])
    page.fill("#id_password", demo["password"])
    page.click("input[type=submit]")
    page.wait_for_url(lambda url: urlsplit(url).path == demo["terminal_path"])


def wait_for_state(page: Page, state: str) -> None:
    """Waits for the status bar to reach `state`; on a timeout, says what the page showed instead."""
    try:
        page.wait_for_selector(f"#status[data-state={state}]", timeout=CONNECT_TIMEOUT_MS)
    except PlaywrightTimeoutError:
        status = page.text_content("#status")
        raise AssertionError(f"status never became {state!r}; it shows {status!r}:\n{screen(page)}") from None


def terminal_size(page: Page) -> tuple[int, int]:
    rows, cols = page.evaluate("[window.wrennTerminal.term.rows, window.wrennTerminal.term.cols]")
    return rows, cols


def test_terminal_runs_a_shell_and_follows_the_window(
    stack: Any, demo: dict[str, Any], chromium_page: Page
) -> None:
    page = chromium_page
    log_in(page, stack.base_url, demo)
    wait_for_state(page, "connected")
    page.click("#terminal")

    # The typed line shows `$((6*7))`; only the shell's answer contains 42.
    run(page, "echo $((6*7))wrenn")
    wait_for_screen(page, re.compile(r"42wrenn"))

    run(page, 'echo "size=$(stty size)."')
    before = wait_for_screen(page, SIZE_LINE)
    assert (int(before[1]), int(before[2])) == terminal_size(page)

    page.set_viewport_size({"width": 700, "height": 400})
    page.wait_for_function(f"window.wrennTerminal.term.cols < {int(before[2])}")
    run(page, 'echo "size=$(stty size)."')
    after = wait_for_screen(page, SIZE_LINE, after=1)

    assert (after[1], after[2]) != (before[1], before[2])
    assert (int(after[1]), int(after[2])) == terminal_size(page)
    assert page.get_attribute("#status", "data-state") == "connected"

    # Close the tab and open the terminal again: the same shell, with its state, comes back.
    run(page, "export MARK=kept-across-tabs")
    tag = page.evaluate("window.wrennTerminal.tag()")
    context = page.context
    page.close()
    reopened = context.new_page()
    reopened.goto(f"{stack.base_url}{demo['terminal_path']}")
    wait_for_state(reopened, "connected")
    assert reopened.evaluate("window.wrennTerminal.tag()") == tag
    wait_for_screen(reopened, re.compile(r"42wrenn"))  # the recent output was replayed, not a blank screen
    reopened.click("#terminal")
    run(reopened, 'echo "mark=$MARK."')
    wait_for_screen(reopened, re.compile(r"^mark=kept-across-tabs\.$", re.MULTILINE))
