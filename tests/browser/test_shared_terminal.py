"""`make cluster`'s promise, in Chromium: one capsule terminal open in two windows served by
different workers keeps every byte, once and in order, in both when the worker leading the session
is SIGKILLed.

Each window records every output frame its sockets receive (an init script wraps WebSocket), so the
checks read what the browser got, not what xterm.js made of it.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from itertools import pairwise
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Page

from tests.browser.test_terminal_page import log_in, run, screen, wait_for_state
from tests.support.cluster import Cluster, running_cluster

pytestmark = [pytest.mark.timeout(300)]

WORKERS = 3
# Against hangs only: every wait polls and goes on as soon as its condition holds.
HANG_TIMEOUT = 90.0
# A window that lands on its partner's worker is closed and opened again, this many times at most.
OPEN_ATTEMPTS = 8
# Numbered lines each window must have received before the kill, and after it.
BEFORE_KILL = 100
AFTER_KILL = 200
# Prints <n=1>, <n=2>, … every 10 ms until a line is typed, then how many. The typed text shows
# `$i` where the output shows digits, so only the shell's output matches NUMBER and ENDED.
FLOW = 'i=0; while ! read -t 0.01 _; do i=$((i+1)); echo "<n=$i>"; done; echo "ended-after-$i"'
NUMBER = re.compile(rb"<n=(\d+)>")
ENDED = re.compile(rb"ended-after-(\d+)")

# Wraps WebSocket before terminal.js runs: every output or missed frame any socket of the page
# receives goes to window.wrennFrames, with the socket's index in the page's order of opening.
RECORD_FRAMES = """(() => {
  const Native = window.WebSocket;
  const frames = [];
  let sockets = 0;
  window.wrennFrames = frames;
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      const socket = sockets++;
      this.addEventListener("message", (event) => {
        let msg;
        try {
          msg = JSON.parse(event.data);
        } catch (e) {
          return;
        }
        if (msg.type === "output") {
          const data = msg.data || "";
          frames.push({ socket, type: msg.type, offset: msg.offset, size: window.atob(data).length, data });
        } else if (msg.type === "missed") {
          frames.push({ socket, type: msg.type, offset: msg.offset, size: msg.bytes, data: "" });
        }
      });
    }
  };
})();"""


@dataclass
class Frame:
    socket: int
    type: str
    offset: int
    size: int
    data: bytes


@dataclass
class Window:
    name: str
    page: Page
    worker: int  # 1-based, as in worker1.log

    def frames(self) -> list[Frame]:
        recorded = self.page.evaluate("window.wrennFrames")
        return [
            Frame(f["socket"], f["type"], f["offset"], f["size"], base64.b64decode(f["data"]))
            for f in recorded
        ]

    def received(self) -> bytes:
        """Every output byte of every socket as it came, repeats and all (their order is checked apart)."""
        return b"".join(frame.data for frame in self.frames())

    def last_number(self) -> int:
        return max((int(n) for n in NUMBER.findall(self.received())), default=0)

    def type(self, command: str) -> None:
        self.page.bring_to_front()
        self.page.click("#terminal")
        run(self.page, command)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster(tmp_path_factory.mktemp("cluster"), WORKERS) as running:
        yield running


def report(cluster: Cluster, windows: list[Window]) -> str:
    """What a failure message needs: the script's state, the logs' ends and both screens."""
    parts = [f"run-cluster.sh exit code: {cluster.proc.poll()}", *cluster.banner.splitlines()[-3:]]
    parts.extend(
        f"--- worker{i}.log ---\n{cluster.log_tail(f'worker{i}.log', 15)}" for i in range(1, WORKERS + 1)
    )
    parts.append(f"--- haproxy.log ---\n{cluster.log_tail('haproxy.log', 10)}")
    for window in windows:
        with contextlib.suppress(PlaywrightError):
            status = window.page.text_content("#status")
            shown = "\n".join(screen(window.page).rstrip().splitlines()[-15:])
            parts.append(f"--- window {window.name} on worker{window.worker} ({status}) ---\n{shown}")
    return "\n".join(parts)


def wait_until(condition: Callable[[], bool], what: str, cluster: Cluster, windows: list[Window]) -> None:
    deadline = time.monotonic() + HANG_TIMEOUT
    while not condition():
        if cluster.proc.poll() is not None:
            raise AssertionError(f"the cluster stopped while waiting for {what}\n{report(cluster, windows)}")
        if time.monotonic() > deadline:
            raise AssertionError(f"still waiting for {what}\n{report(cluster, windows)}")
        time.sleep(0.1)


def wait_for_answers(answers: list[str], cluster: Cluster, windows: list[Window]) -> None:
    wait_until(
        lambda: all(answer in screen(w.page) for w in windows for answer in answers),
        f"{' and '.join(answers)} on every screen",
        cluster,
        windows,
    )


def socket_counts(cluster: Cluster, capsule: str) -> list[int]:
    """How many of the capsule's terminal sockets each worker has accepted (daphne's access log)."""
    line = f"WSCONNECT /v1/capsules/{capsule}/pty"
    return [cluster.log(f"worker{i}.log").count(line) for i in range(1, WORKERS + 1)]


def open_window(
    name: str, page: Page, load: Callable[[], object], capsule: str, cluster: Cluster, windows: list[Window]
) -> Window:
    """Loads the terminal page in ``page`` with ``load``, recording, and finds its socket's worker."""
    before = socket_counts(cluster, capsule)
    page.add_init_script(RECORD_FRAMES)
    load()
    wait_for_state(page, "connected")
    wait_until(lambda: socket_counts(cluster, capsule) != before, f"window {name}'s socket", cluster, windows)
    after = socket_counts(cluster, capsule)
    grew = [i for i in range(1, WORKERS + 1) if after[i - 1] > before[i - 1]]
    assert sum(after) == sum(before) + 1, f"{before} -> {after}\n{report(cluster, windows)}"
    return Window(name, page, grew[0])


def leader(cluster: Cluster, capsule: str, tag: str) -> int | None:
    """The worker that logged taking the session's lease last, if any did."""
    taken = f"leading wrenn:lead:pty.{capsule}.{tag}"
    latest: dict[str, int] = {}
    for i in range(1, WORKERS + 1):
        for line in cluster.log(f"worker{i}.log").splitlines():
            if line.endswith(taken):
                latest[line[:23]] = i  # the line's timestamp, 2025-01-31 12:00:00,123
    return latest[max(latest)] if latest else None


def byte_stream(window: Window, cluster: Cluster, windows: list[Window]) -> tuple[int, bytes]:
    """The window's output as (first offset, bytes), once checked to be whole and in order."""
    frames = window.frames()
    assert frames, f"window {window.name} received no output\n{report(cluster, windows)}"
    missed = [frame for frame in frames if frame.type == "missed"]
    assert not missed, f"window {window.name} was told it missed bytes: {missed}\n{report(cluster, windows)}"
    for frame in frames:
        assert frame.size == len(frame.data), f"window {window.name}: {frame}"
    for previous, frame in pairwise(frames):
        expected = previous.offset + previous.size
        assert frame.offset == expected, (
            f"window {window.name}: a frame of socket {frame.socket} starts at byte {frame.offset}, "
            f"but the one before (socket {previous.socket}) ended at {expected}: "
            f"{'repeated' if frame.offset < expected else 'missed'} {abs(frame.offset - expected)} bytes\n"
            f"{report(cluster, windows)}"
        )
    return frames[0].offset, b"".join(frame.data for frame in frames)


def runs(numbers: list[int]) -> str:
    """Runs of consecutive numbers, as 1-50, 52-99, 99-120, so that gaps and repeats stand out."""
    found: list[list[int]] = []
    for n in numbers:
        if found and n == found[-1][1] + 1:
            found[-1][1] = n
        else:
            found.append([n, n])
    return ", ".join(f"{first}-{last}" for first, last in found)


def test_two_windows_on_different_workers_lose_and_repeat_nothing_when_the_leader_is_killed(
    cluster: Cluster, chromium_page: Page
) -> None:
    capsule = cluster.banner_field(r"Socket:\s+ws://\S+/v1/capsules/(cl-[0-9a-f]+)/pty")
    terminal_url = cluster.banner_field(r"Terminal:\s+(http://\S+)")
    demo = {
        "username": cluster.banner_field(r"Log in:.*\buser (\S+)"),
        "password": cluster.banner_field(r"Log in:.*\bpassword (\S+)"),
        "terminal_path": urlsplit(terminal_url).path,
    }
    windows: list[Window] = []

    # Window A logs in and starts a shell; window B, a second tab of the same browser, joins
    # A's session (the tag is in localStorage) through a socket on another worker.
    a = open_window(
        "A", chromium_page, lambda: log_in(chromium_page, cluster.url, demo), capsule, cluster, windows
    )
    windows.append(a)
    tag = a.page.evaluate("window.wrennTerminal.tag()")
    for _ in range(OPEN_ATTEMPTS):
        page = chromium_page.context.new_page()
        b = open_window("B", page, partial(page.goto, terminal_url), capsule, cluster, windows)
        if b.worker != a.worker:
            break
        page.close()
    assert b.worker != a.worker, f"window B landed on worker{a.worker} every time\n{report(cluster, windows)}"
    windows.append(b)
    assert b.page.evaluate("window.wrennTerminal.tag()") == tag

    # Each types in turn (keys typed at once in two windows would interleave in the one shell);
    # both see both answers. The typed lines show `$((…))`, the answers the digits.
    a.type("echo from-a-$((1+1))")
    wait_for_answers(["from-a-2"], cluster, windows)
    b.type("echo from-b-$((2+2))")
    wait_for_answers(["from-a-2", "from-b-4"], cluster, windows)

    wait_until(lambda: leader(cluster, capsule, tag) is not None, "a worker to lead", cluster, windows)
    leading = leader(cluster, capsule, tag)
    assert leading is not None

    # Output flows before, while and after the leading worker is killed.
    a.type(FLOW)
    wait_until(
        lambda: all(w.last_number() >= BEFORE_KILL for w in windows), "the flow to begin", cluster, windows
    )
    os.kill(cluster.worker_pid(leading), signal.SIGKILL)
    at_kill = max(w.last_number() for w in windows)
    wait_until(
        lambda: all(w.last_number() >= at_kill + AFTER_KILL for w in windows),
        f"<n={at_kill + AFTER_KILL}> in both windows after worker{leading} was killed at <n={at_kill}>",
        cluster,
        windows,
    )
    b.type("stop")
    wait_until(lambda: all(ENDED.search(w.received()) for w in windows), "the flow's end", cluster, windows)

    a.type("echo again-a-$((3+3))")
    wait_for_answers(["again-a-6"], cluster, windows)
    b.type("echo again-b-$((4+4))")
    wait_for_answers(["again-a-6", "again-b-8"], cluster, windows)

    # Each window got one unbroken stream across its sockets, with the flow in it exactly once,
    # and the two streams agree byte for byte where both have them.
    streams = {window.name: byte_stream(window, cluster, windows) for window in windows}
    for window in windows:
        data = streams[window.name][1]
        ended = ENDED.search(data)
        assert ended, f"window {window.name}: no end of the flow in its stream\n{report(cluster, windows)}"
        numbers, count = [int(n) for n in NUMBER.findall(data)], int(ended[1])
        assert numbers == list(range(1, count + 1)), (
            f"window {window.name} got the numbered lines {runs(numbers)} of 1-{count}\n"
            f"{report(cluster, windows)}"
        )
        assert "bytes of output missed" not in screen(window.page), report(cluster, windows)
    (start_a, bytes_a), (start_b, bytes_b) = streams["A"], streams["B"]
    common = range(max(start_a, start_b), min(start_a + len(bytes_a), start_b + len(bytes_b)))
    shared_a = bytes_a[common.start - start_a : common.stop - start_a]
    shared_b = bytes_b[common.start - start_b : common.stop - start_b]
    assert ENDED.search(shared_a), f"the windows' streams share only bytes {common}"
    differs = next((i for i, (x, y) in enumerate(zip(shared_a, shared_b, strict=True)) if x != y), None)
    if differs is not None:
        a_has, b_has = shared_a[differs : differs + 40], shared_b[differs : differs + 40]
        raise AssertionError(
            f"the windows differ at byte {common.start + differs}: A has {a_has!r}, B has {b_has!r}\n"
            f"{report(cluster, windows)}"
        )

    # The test did what it says: the killed worker served a window, which came back on another.
    killed = next((w for w in windows if w.worker == leading), None)
    assert killed is not None, f"worker{leading} led but served neither window\n{report(cluster, windows)}"
    assert len({frame.socket for frame in killed.frames()}) > 1, f"window {killed.name} never reconnected"
