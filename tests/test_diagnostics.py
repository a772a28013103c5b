"""The diagnostics snapshot: off without a file, written whole on SIGUSR1, never raised into the loop."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.polling import wait_until
from wrenn import diagnostics

pytestmark = [pytest.mark.timeout(30)]


@pytest.fixture
def usr1_handler() -> Iterator[None]:
    """Puts SIGUSR1's handler back as it was: install() replaces it for the whole process."""
    previous = signal.getsignal(diagnostics.SIGNAL)
    try:
        yield
    finally:
        signal.signal(diagnostics.SIGNAL, previous)


def _read(path: Path) -> dict[str, Any]:
    snapshot: dict[str, Any] = json.loads(path.read_text())
    return snapshot


def _names(directory: Path) -> list[str]:
    return sorted(entry.name for entry in directory.iterdir())


async def _signal_and_read(path: Path) -> dict[str, Any]:
    os.kill(os.getpid(), diagnostics.SIGNAL)
    await wait_until(path.exists)
    return _read(path)


def test_off_without_a_file(usr1_handler: None) -> None:
    before = signal.getsignal(diagnostics.SIGNAL)
    assert diagnostics.install("") is False
    assert signal.getsignal(diagnostics.SIGNAL) is before


async def test_sigusr1_writes_tasks_and_memory(tmp_path: Path, usr1_handler: None) -> None:
    path = tmp_path / "snapshot.json"
    assert diagnostics.install(str(path))

    async def idle() -> None:
        await asyncio.sleep(60)

    waiting = [asyncio.create_task(idle()) for _ in range(3)]
    try:
        snapshot = await _signal_and_read(path)
    finally:
        for task in waiting:
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
    assert snapshot["pid"] == os.getpid()
    # The test's own task and the three it started, counted by what they run.
    assert snapshot["task_kinds"][f"{__name__}:{idle.__qualname__}"] == 3
    assert snapshot["tasks"] == sum(snapshot["task_kinds"].values()) >= 4
    assert snapshot["rss_bytes"] > 1024 * 1024
    assert _names(tmp_path) == ["snapshot.json"]  # no partial file left


async def test_a_snapshot_says_where_tasks_wait(tmp_path: Path, usr1_handler: None) -> None:
    path = tmp_path / "snapshot.json"
    assert diagnostics.install(str(path))
    never = asyncio.Event()

    async def inner() -> None:
        await never.wait()

    async def outer() -> None:
        await inner()

    waiting = asyncio.create_task(outer())
    try:
        snapshot = await _signal_and_read(path)
    finally:
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
    (place,) = snapshot["waits"][f"{__name__}:{outer.__qualname__}"]
    # Down the chain of awaits to the event's wait, and the future it parks on.
    assert place.startswith("asyncio.locks:"), place
    assert " wait awaiting Future" in place, place


async def test_the_file_name_takes_the_process_id(tmp_path: Path, usr1_handler: None) -> None:
    assert diagnostics.install(str(tmp_path / "worker-{pid}.json"))
    snapshot = await _signal_and_read(tmp_path / f"worker-{os.getpid()}.json")
    assert snapshot["pid"] == os.getpid()


async def test_a_file_it_cannot_write_is_logged(
    tmp_path: Path, usr1_handler: None, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "missing-directory" / "snapshot.json"
    assert diagnostics.install(str(path))
    with caplog.at_level(logging.WARNING, logger=diagnostics.__name__):
        os.kill(os.getpid(), diagnostics.SIGNAL)
        await wait_until(lambda: any(record.levelno == logging.WARNING for record in caplog.records))
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert warnings[0].startswith(f"diagnostics: cannot write {path}: ")
    assert not path.parent.exists()


def test_only_the_main_thread_installs_it(
    tmp_path: Path, usr1_handler: None, caplog: pytest.LogCaptureFixture
) -> None:
    results: list[bool] = []
    thread = threading.Thread(target=lambda: results.append(diagnostics.install(str(tmp_path / "s.json"))))
    with caplog.at_level(logging.WARNING, logger=diagnostics.__name__):
        thread.start()
        thread.join(timeout=10)
    assert results == [False]
    assert "not in the main thread" in caplog.text


def test_a_signal_before_the_loop_runs_is_logged(
    tmp_path: Path, usr1_handler: None, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "snapshot.json"
    assert diagnostics.install(str(path))
    with caplog.at_level(logging.WARNING, logger=diagnostics.__name__):
        os.kill(os.getpid(), diagnostics.SIGNAL)  # the handler runs before kill() returns
    assert "no event loop is running yet" in caplog.text
    assert not path.exists()
