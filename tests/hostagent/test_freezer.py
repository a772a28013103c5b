"""Choosing the pause mechanism, the process trees the signal fallback walks, and the freezer's
blocking work kept off the event loop (in-process)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from pathlib import Path

import pytest

from hostagent import freezer, procs
from hostagent.procs import Proc, process_trees
from tests.support.polling import wait_until


@pytest.fixture
def no_cgroups(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(freezer, "_mounts", lambda: [])


@pytest.mark.usefixtures("no_cgroups")
def test_auto_without_a_cgroup_freezer_falls_back_to_signals() -> None:
    assert isinstance(freezer.choose_freezer("auto", "wrenn-hostagent"), freezer.SignalFreezer)


@pytest.mark.usefixtures("no_cgroups")
@pytest.mark.parametrize("mechanism", ["cgroup2", "cgroup1"])
def test_an_unavailable_mechanism_asked_for_refuses(mechanism: str) -> None:
    with pytest.raises(freezer.FreezerUnavailable) as caught:
        freezer.choose_freezer(mechanism, "wrenn-hostagent")
    assert str(caught.value) == f"the {mechanism} freezer cannot work here: no such hierarchy is mounted"


@pytest.mark.parametrize("root", ["../escape", "/absolute", "a/../b", ""])
def test_a_cgroup_root_must_be_a_relative_path_of_names(root: str) -> None:
    with pytest.raises(freezer.FreezerUnavailable, match="invalid cgroup root"):
        freezer.choose_freezer("signals", root)


def test_process_trees_list_parents_before_children_and_include_session_orphans() -> None:
    table = {
        1: Proc(1, "S", 0, 1, 1),
        # A shell (session 100), its job, the job's child, and an orphan of the session.
        100: Proc(100, "S", 50, 100, 100),
        130: Proc(130, "S", 120, 120, 100),
        120: Proc(120, "S", 100, 120, 100),
        110: Proc(110, "S", 1, 110, 100),
        # Someone else's.
        200: Proc(200, "S", 1, 200, 200),
    }
    assert process_trees([100], table) == [100, 110, 120, 130]


# How long a healthy event loop may take to run a callback before the watchdog calls it blocked.
LOOP_SILENCE = 20.0


def _descriptors_of(path: Path) -> int:
    """How many open descriptors of this process refer to `path`."""
    wanted = os.stat(path)
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own descriptor, gone by now
            found = os.stat(f"/proc/self/fd/{fd}")
            count += (found.st_dev, found.st_ino) == (wanted.st_dev, wanted.st_ino)
    return count


def _drain(fd: int) -> bytes:
    chunks = []
    with contextlib.suppress(BlockingIOError):
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    return b"".join(chunks)


class _Watchdog(threading.Thread):
    """Lets a write to the FIFO through if it has stopped the event loop: the test then fails
    on its assertions instead of hanging (pytest-timeout cannot free a loop blocked in a write)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, fifo: Path, pipe: int) -> None:
        super().__init__(daemon=True)
        self.loop, self.fifo, self.pipe = loop, fifo, pipe
        self.finished = threading.Event()

    def run(self) -> None:
        while _descriptors_of(self.fifo) < 2:  # until a writer has it open
            if self.finished.wait(0.01):
                return
        alive = threading.Event()
        self.loop.call_soon_threadsafe(alive.set)
        if not alive.wait(LOOP_SILENCE):
            _drain(self.pipe)


@pytest.mark.timeout(120)
async def test_a_cgroup_write_the_kernel_is_slow_to_take_leaves_other_sandboxes_served(
    tmp_path: Path,
) -> None:
    # A cgroup write can wait long in the kernel (its locks, a freeze of thousands of tasks).
    # Here `cgroup.freeze` of one sandbox is a FIFO whose pipe is full: writing it blocks until
    # the test reads. Done on the event loop, that write would stop every other sandbox's work.
    cgroups = freezer.CgroupV2Freezer(tmp_path)
    for sandbox_id in ("crowded", "other"):
        (tmp_path / sandbox_id).mkdir()
        (tmp_path / sandbox_id / "cgroup.events").write_text("populated 1\nfrozen 1\n")
    (tmp_path / "other" / "cgroup.freeze").write_text("0")
    fifo = tmp_path / "crowded" / "cgroup.freeze"
    os.mkfifo(fifo)
    # Read and write ends in one: the freezer's open finds a reader, and its write a full pipe.
    pipe = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
    watchdog = _Watchdog(asyncio.get_running_loop(), fifo, pipe)
    try:
        filler = 0
        with contextlib.suppress(BlockingIOError):
            while True:
                filler += os.write(pipe, b"x" * 4096)
        watchdog.start()
        crowded = asyncio.create_task(cgroups.freeze("crowded", []))
        await wait_until(lambda: _descriptors_of(fifo) == 2 or crowded.done())  # its write is under way
        assert not crowded.done(), "the cgroup write blocked the event loop"

        await cgroups.freeze("other", [])
        assert (tmp_path / "other" / "cgroup.freeze").read_text() == "1"
        assert not crowded.done()

        written = _drain(pipe)
        await crowded  # returns once its write has gone through
        written += _drain(pipe)
        assert written == b"x" * filler + b"1"
    finally:
        watchdog.finished.set()
        os.close(pipe)  # a write still blocked then fails (EPIPE) instead of hanging the run


@pytest.mark.timeout(60)
async def test_a_slow_proc_scan_leaves_the_loop_running(monkeypatch: pytest.MonkeyPatch) -> None:
    # A capsule with thousands of processes makes a /proc scan slow; the agent must meanwhile
    # go on serving other capsules. The scan here takes as long as the test wants.
    scanning = threading.Event()
    finish = threading.Event()

    def slow_process_table() -> dict[int, Proc]:
        scanning.set()
        # Bounded: a scan run on the loop blocks the test, which then fails below.
        finish.wait(timeout=LOOP_SILENCE)
        return {}

    monkeypatch.setattr(procs, "process_table", slow_process_table)
    killing = asyncio.create_task(freezer.SignalFreezer().kill_all("crowded", []))
    await wait_until(scanning.is_set)
    assert not killing.done(), "the /proc scan blocked the event loop"
    finish.set()
    assert await killing == 0
