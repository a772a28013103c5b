"""One session, three generations of clients: the terminal page in Chromium (the JSON dialect
with extensions, stated), wrenn SDK 0.2.0 (JSON, recognised from its input) and 0.3.0 (raw
binary frames, recognised from its input), each seeing every byte in its own dialect."""

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from playwright.sync_api import Page

from tests.browser.test_terminal_page import log_in, run, wait_for_screen, wait_for_state
from tests.support.sdk import SDK_VERSIONS, Sdk, connect, read_until, sdk_python, write

# Text the terminal shows as it is, with UTF-8 beyond ASCII; the command prints it from octal
# escapes, so the terminal's echo of the command line cannot be mistaken for it.
KNOWN = "1.2.3.4.5.6.7.8.9.10 ünïcødé ✓ 漢字"
PRINT_KNOWN = (
    "printf 'BEGIN%s' -; printf '"
    + "".join(f"\\{byte:03o}" for byte in KNOWN.encode())
    + "'; printf 'END%s\\n' -"
)


def test_the_page_and_both_sdk_generations_share_one_session(
    stack: Any, demo: dict[str, Any], chromium_page: Page, tmp_path: Path
) -> None:
    page = chromium_page
    log_in(page, stack.base_url, demo)
    wait_for_state(page, "connected")
    page.click("#terminal")
    tag = page.evaluate("window.wrennTerminal.tag()")
    # The known text is printed only once each SDK has typed a line: all three watch by then.
    run(page, f"read a; read b; {PRINT_KNOWN}")
    sdks = [
        Sdk(
            version,
            sdk_python(version),
            f"{stack.base_url}/api",
            demo["api_key"],
            demo["capsule_id"],
            tmp_path,
        )
        for version in SDK_VERSIONS
    ]
    with ThreadPoolExecutor(len(sdks)) as pool:
        runs = list(
            pool.map(
                lambda sdk: sdk.run(connect(tag), write(f"from-{sdk.version}\n"), read_until("END-")), sdks
            )
        )
    for result in runs:
        result.check()  # no unknown frame type, no output event without its bytes
        output = result.output
        assert output.count(b"BEGIN-") == 1, result
        assert output.split(b"BEGIN-", 1)[1].split(b"END-", 1)[0] == KNOWN.encode(), result.version
        assert result.errors == [], result
    shown = wait_for_screen(page, re.compile(r"BEGIN-(.*)END-"))
    assert shown[1] == KNOWN
    assert page.get_attribute("#status", "data-state") == "connected"
