"""The playback page in Chromium on the real stack: a recording built with recordings.store (as the
host agent's pushes are stored) plays in the asciinema player; at a seek position the terminal
shows the text written before it and none written after, in the DOM and in a screenshot; markers
are chapters; speed and the idle-time limit apply; a live recording grows on reload."""

from __future__ import annotations

import base64
import json
import secrets
from pathlib import Path
from typing import Any
from urllib.error import HTTPError
from urllib.request import urlopen

import pytest
from playwright.sync_api import Page

from tests.browser.test_home import make_person, on_stack, sign_in
from tests.support.stack import Stack

pytestmark = [pytest.mark.timeout(300)]

# A session of 4.5 seconds: two lines, a resize to 100×30, a marker, two more lines. Each line
# after the first starts with CRLF, so the cursor stays at the end of the last line written and
# the row of the next line is blank until its event.
HEADER = {"version": 2, "width": 80, "height": 24, "timestamp": 1700000000, "command": "/bin/bash"}
BEFORE_MARKER = [
    [0.5, "o", "first-line"],
    [1.5, "o", "\r\nsecond-line"],
    [2.0, "r", "100x30"],
]
AFTER_MARKER = [
    [2.5, "m", "checkpoint"],
    [3.5, "o", "\r\nthird-line"],
    [4.5, "o", "\r\nfourth-line"],
]

# The player's terminal, one string a row, as it renders it (a <pre> of one <span> a row).
SCREEN = """() => [...document.querySelectorAll("#player .ap-term-text .ap-line")]
  .map((line) => line.textContent.replace(/\\u00a0/g, " ").trimEnd())"""
# Where each row of the player's terminal is, in pixels from the top of the terminal's element.
ROW_BANDS = """() => {
  const top = document.querySelector("#player .ap-term").getBoundingClientRect().top;
  return [...document.querySelectorAll("#player .ap-term-text .ap-line")].map((line) => {
    const box = line.getBoundingClientRect();
    return [box.top - top, box.bottom - top];
  });
}"""
# How many pixels of each band of rows of a screenshot differ from its background (its most
# common colour): a blank row has none. Worked out in the page, on a canvas.
INK = """async ([png, bands]) => {
  const image = new Image();
  image.src = "data:image/png;base64," + png;
  await image.decode();
  const canvas = document.createElement("canvas");
  canvas.width = image.width;
  canvas.height = image.height;
  const context = canvas.getContext("2d");
  context.drawImage(image, 0, 0);
  const pixels = context.getImageData(0, 0, image.width, image.height).data;
  const colour = (i) => (pixels[i] << 16) | (pixels[i + 1] << 8) | pixels[i + 2];
  const counts = new Map();
  for (let i = 0; i < pixels.length; i += 4) counts.set(colour(i), (counts.get(colour(i)) || 0) + 1);
  const background = [...counts.entries()].sort((a, b) => b[1] - a[1])[0][0];
  const scale = window.devicePixelRatio;
  return bands.map(([top, bottom]) => {
    let count = 0;
    for (let y = Math.ceil(top * scale); y < Math.floor(bottom * scale); y++) {
      for (let x = 0; x < image.width; x++) if (colour((y * image.width + x) * 4) !== background) count++;
    }
    return count;
  });
}"""


def cast(*events: Any) -> bytes:
    return b"".join(json.dumps(line).encode() + b"\n" for line in events)


def save_recording(stack: Stack, capsule_id: str, tag: str, chunks: list[bytes], *, ended: bool) -> None:
    """A recording of session `tag` with `chunks` stored through recordings.store.save_chunk."""
    encoded = [base64.b64encode(chunk).decode() for chunk in chunks]
    on_stack(
        stack,
        f"""
import base64
from datetime import timedelta
from django.utils import timezone
from capsules.models import Sandbox
from recordings import store
from recordings.models import Recording
capsule = Sandbox.objects.get(pk={capsule_id!r})
now = timezone.now()
recording = Recording.objects.create(
    sandbox=capsule, team_id=capsule.team_id, tag={tag!r}, command="/bin/bash", started_by="user:test",
    started_at=now - timedelta(seconds=5), ended_at=now if {ended!r} else None, duration=4.5, exit_code=0,
)
offset = 0
for seq, chunk in enumerate({encoded!r}):
    data = base64.b64decode(chunk)
    store.save_chunk(recording, seq, data, offset=offset, time=float(seq))
    offset += len(data)
""",
    )


def add_chunk(stack: Stack, capsule_id: str, tag: str, seq: int, chunk: bytes) -> None:
    on_stack(
        stack,
        f"""
import base64
from recordings import store
from recordings.models import Recording
recording = Recording.objects.get(sandbox_id={capsule_id!r}, tag={tag!r})
data = base64.b64decode({base64.b64encode(chunk).decode()!r})
store.save_chunk(recording, {seq}, data, offset=recording.bytes, time=2.5)
""",
    )


def capsule_of(stack: Stack, team_id: str) -> str:
    """A capsule row of the team: the page only reads its recordings, so no agent is asked."""
    code = f"""
from capsules.models import Host, Sandbox
capsule = Sandbox.objects.create(team_id={team_id!r}, host=Host.objects.first(), status="stopped")
print('"' + capsule.pk + '"')
"""
    capsule_id: str = on_stack(stack, code)
    return capsule_id


def new_tag() -> str:
    return f"pty-{secrets.token_hex(4)}"


def open_player(page: Page) -> None:
    page.wait_for_selector("#player-state[data-state=ready]")
    assert page.evaluate("window.wrennPlayback.ready")


def seek(page: Page, seconds: float) -> None:
    page.evaluate("(t) => window.wrennPlayback.player().seek(t)", seconds)


def wait_for_screen(page: Page, check: str) -> list[str]:
    """Waits until the rendered rows satisfy `check` (JS over `rows`), and returns them."""
    page.wait_for_function(f"(() => {{ const rows = ({SCREEN})(); return {check}; }})()")
    rows: list[str] = page.evaluate(SCREEN)
    return rows


def ink(page: Page, shot: bytes) -> list[int]:
    """Pixels of ink in each row of the terminal's screenshot `shot`."""
    bands = page.evaluate(ROW_BANDS)
    counts: list[int] = page.evaluate(INK, [base64.b64encode(shot).decode(), bands])
    return counts


@pytest.fixture
def played(stack: Stack) -> dict[str, Any]:
    """A person, a capsule of their team and an ended recording of it."""
    person = make_person(stack, "Playback")
    capsule_id = capsule_of(stack, person.teams["Playback"])
    tag = new_tag()
    save_recording(stack, capsule_id, tag, [cast(HEADER, *BEFORE_MARKER), cast(*AFTER_MARKER)], ended=True)
    return {
        "person": person,
        "capsule": capsule_id,
        "tag": tag,
        "path": f"/capsules/{capsule_id}/recordings/{tag}/",
    }


def test_a_seek_shows_what_was_written_before_it_and_nothing_after(
    chromium_page: Page, stack: Stack, played: dict[str, Any], tmp_path: Path
) -> None:
    page = chromium_page
    sign_in(page, stack.base_url, played["person"], played["path"])
    open_player(page)
    assert page.evaluate("window.wrennPlayback.player().getDuration()") == pytest.approx(4.5)

    seek(page, 3.0)
    rows = wait_for_screen(page, 'rows[1] === "second-line"')
    assert rows[:3] == ["first-line", "second-line", ""]
    assert "third-line" not in "\n".join(rows)
    # The resize at 2.0 s is in effect: 100×30.
    assert len(rows) == 30
    shot = page.locator("#player .ap-term").screenshot(path=str(tmp_path / "at-3.0s.png"))
    before = ink(page, shot)
    assert before[0] > 0, before  # first-line
    assert before[1] > 0, before  # second-line and the cursor
    assert before[2] == 0, before  # where third-line is written at 3.5 s: blank

    seek(page, 4.0)
    rows = wait_for_screen(page, 'rows[2] === "third-line"')
    assert "fourth-line" not in "\n".join(rows)
    shot = page.locator("#player .ap-term").screenshot(path=str(tmp_path / "at-4.0s.png"))
    after = ink(page, shot)
    assert after[2] > 0, after
    assert after[3] == 0, after


def test_markers_are_chapters(chromium_page: Page, stack: Stack, played: dict[str, Any]) -> None:
    page = chromium_page
    sign_in(page, stack.base_url, played["person"], played["path"])
    open_player(page)
    assert page.evaluate("window.wrennPlayback.markers()") == [{"time": 2.5, "label": "checkpoint"}]
    chapter = page.locator("#chapters button.chapter")
    assert chapter.text_content() == "2.5 s  checkpoint"
    seek(page, 4.4)
    wait_for_screen(page, 'rows[2] === "third-line"')
    chapter.click()
    rows = wait_for_screen(page, 'rows[2] === ""')
    assert rows[:2] == ["first-line", "second-line"]
    assert page.evaluate("window.wrennPlayback.player().getCurrentTime()") == pytest.approx(2.5)


def test_speed_and_idle_time_limit_apply_and_keep_the_position(
    chromium_page: Page, stack: Stack, played: dict[str, Any]
) -> None:
    page = chromium_page
    sign_in(page, stack.base_url, played["person"], played["path"])
    open_player(page)
    seek(page, 3.0)
    wait_for_screen(page, 'rows[1] === "second-line"')

    page.select_option("#speed", "2")
    assert "speed=2" in page.url
    rows = wait_for_screen(page, 'rows[1] === "second-line"')
    assert "third-line" not in "\n".join(rows)

    # Every pause longer than 0.5 s is cut to 0.5 s: 4.5 s of recording play in 3.
    page.select_option("#idle", "0.5")
    assert "idle=0.5" in page.url
    page.wait_for_function("window.wrennPlayback.player().getDuration() !== undefined")
    assert page.evaluate("window.wrennPlayback.player().getDuration()") == pytest.approx(3.0)

    # The choices come back with the address.
    page.reload()
    open_player(page)
    assert page.input_value("#speed") == "2"
    assert page.input_value("#idle") == "0.5"


def test_a_link_with_a_time_opens_at_that_time(
    chromium_page: Page, stack: Stack, played: dict[str, Any]
) -> None:
    page = chromium_page
    sign_in(page, stack.base_url, played["person"], f"{played['path']}?t=4")
    open_player(page)
    rows = wait_for_screen(page, 'rows[2] === "third-line"')
    assert "fourth-line" not in "\n".join(rows)


def test_playing_runs_to_the_end(chromium_page: Page, stack: Stack, played: dict[str, Any]) -> None:
    page = chromium_page
    sign_in(page, stack.base_url, played["person"], f"{played['path']}?speed=8")
    open_player(page)
    page.evaluate("window.wrennPlayback.player().play()")
    rows = wait_for_screen(page, 'rows[3] === "fourth-line"')
    assert rows[:4] == ["first-line", "second-line", "third-line", "fourth-line"]


def test_a_live_recording_plays_from_its_start_and_loads_what_is_new(
    chromium_page: Page, stack: Stack
) -> None:
    page = chromium_page
    person = make_person(stack, "Live")
    capsule_id = capsule_of(stack, person.teams["Live"])
    tag = new_tag()
    save_recording(stack, capsule_id, tag, [cast(HEADER, *BEFORE_MARKER)], ended=False)
    sign_in(page, stack.base_url, person, f"/capsules/{capsule_id}/recordings/{tag}/")
    open_player(page)
    assert page.get_attribute("#recording", "data-live") == "true"
    seek(page, 0.6)
    rows = wait_for_screen(page, 'rows[0] === "first-line"')
    assert "second-line" not in "\n".join(rows)

    add_chunk(stack, capsule_id, tag, 1, cast(*AFTER_MARKER))
    page.click("#reload")
    page.wait_for_selector("#player-state:has-text('loaded what is new')")
    assert page.evaluate("window.wrennPlayback.markers()") == [{"time": 2.5, "label": "checkpoint"}]
    seek(page, 4.0)
    wait_for_screen(page, 'rows[2] === "third-line"')


def test_another_team_recording_is_not_found(
    chromium_page: Page, stack: Stack, played: dict[str, Any]
) -> None:
    page = chromium_page
    outsider = make_person(stack, "Outsiders")
    sign_in(page, stack.base_url, outsider)
    response = page.goto(f"{stack.base_url}{played['path']}")
    assert response is not None
    assert response.status == 404
    assert page.text_content("#error") == f"recording {played['capsule']}/{played['tag']} not found"
    status, body = page.evaluate(
        "async (path) => { const r = await fetch(path); return [r.status, await r.text()]; }",
        f"{played['path']}cast",
    )
    assert (status, body) == (404, f"recording {played['capsule']}/{played['tag']} not found\n")


def test_the_cast_route_refuses_anonymous_callers(stack: Stack, played: dict[str, Any]) -> None:
    with pytest.raises(HTTPError) as refused:
        urlopen(f"{stack.base_url}{played['path']}cast", timeout=10)  # noqa: S310 - the local stack
    assert refused.value.code == 403
    assert refused.value.read() == b"sign in to play recordings\n"
