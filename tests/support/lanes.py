"""The four test lanes, each test's lane derived in one place, and a guard that fails a test starting a
process its lane does not allow.

    unit     in-process code, the database, Redis: no process at all
    agent    real host agent subprocesses (``python -m hostagent``) and nothing else
    stack    daphne, ``manage.py`` and other entry points as subprocesses: the stack, a cluster
    browser  Chromium (tests/browser)

A test's lane is the highest of its folder's (tests/integration: stack, tests/browser: browser), its
fixtures' (``agent`` or a name ending in ``_agent``/``_agents``: agent; ``stack``, ``cluster`` or a
name ending in ``_stack``: stack) and an explicit ``pytest.mark.agent`` or ``pytest.mark.stack`` on a
test that starts such processes itself. An explicit mark below what the folder and fixtures need is
an error; one above it is a claim the guard checks: a test marked so must start such a process.
"""

from __future__ import annotations

import _posixsubprocess  # what multiprocessing starts processes with
import os
import subprocess
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

LANES = ("unit", "agent", "stack", "browser")
# Folders (from the repository's root) whose every test is in a lane.
FOLDER_LANES: dict[tuple[str, ...], str] = {
    ("tests", "integration"): "stack",
    ("tests", "browser"): "browser",
}


def fixture_lane(name: str) -> str:
    if name in ("stack", "cluster") or name.endswith("_stack"):
        return "stack"
    if name == "agent" or name.endswith(("_agent", "_agents")):
        return "agent"
    return "unit"


def highest(*lanes: str) -> str:
    return max(lanes, key=LANES.index)


def derived_lane(item: pytest.Item) -> str:
    """What the test's folder and fixtures (with the fixtures those use) need."""
    folder = item.path.relative_to(item.config.rootpath).parts[:2]
    names = getattr(item, "fixturenames", ())
    return highest(FOLDER_LANES.get(folder, "unit"), *(fixture_lane(name) for name in names))


def is_hostagent(argv: Sequence[Any]) -> bool:
    words = [os.fsdecode(os.fspath(word)) for word in argv[:3]]
    return words[1:3] == ["-m", "hostagent"]


@dataclass
class Started:
    kind: str  # "agent" (a host agent) or "other"
    what: str


@dataclass
class ProcessGuard:
    """Wraps every way this process can start another. While a test runs (``lane`` set), records
    what it starts and refuses what its lane does not allow."""

    lane: str | None = None
    started: list[Started] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    _originals: list[tuple[Any, str, Any]] = field(default_factory=list)

    def install(self) -> None:
        def argv_first(original: Callable[..., Any]) -> Callable[..., Any]:
            def guarded(argv: Sequence[Any], *args: Any, **kwargs: Any) -> Any:
                self.check(argv)
                return original(argv, *args, **kwargs)

            return guarded

        def argv_second(original: Callable[..., Any]) -> Callable[..., Any]:
            def guarded(path: Any, argv: Sequence[Any], *args: Any, **kwargs: Any) -> Any:
                self.check(argv)
                return original(path, argv, *args, **kwargs)

            return guarded

        def no_argv(original: Callable[..., Any], what: str) -> Callable[..., Any]:
            def guarded(*args: Any, **kwargs: Any) -> Any:
                self.check(None, what)
                return original(*args, **kwargs)

            return guarded

        # subprocess (and so asyncio) forks through its own reference to fork_exec, or posix_spawn.
        targets: list[tuple[Any, str, Callable[[Any], Callable[..., Any]]]] = [
            (subprocess, "_fork_exec", argv_first),
            (_posixsubprocess, "fork_exec", argv_first),
            (os, "posix_spawn", argv_second),
            (os, "posix_spawnp", argv_second),
            (os, "fork", lambda original: no_argv(original, "os.fork()")),
            (os, "forkpty", lambda original: no_argv(original, "os.forkpty()")),
            (os, "system", lambda original: no_argv(original, "os.system()")),
        ]
        for module, name, wrap in targets:
            original = getattr(module, name)
            self._originals.append((module, name, original))
            setattr(module, name, wrap(original))

    def uninstall(self) -> None:
        for module, name, original in reversed(self._originals):
            setattr(module, name, original)
        self._originals.clear()

    def check(self, argv: Sequence[Any] | None, what: str = "") -> None:
        if self.lane is None:
            return
        agent = argv is not None and is_hostagent(argv)
        what = what or " ".join(os.fsdecode(os.fspath(word)) for word in (argv or ()))[:200]
        self.started.append(Started("agent" if agent else "other", what))
        if self.lane == "unit" or (self.lane == "agent" and not agent):
            allowed = "no process" if self.lane == "unit" else "host agents only"
            message = (
                f"a test in the {self.lane} lane ({allowed}) started {what!r}: give it the lane it needs"
            )
            self.refused.append(message)
            pytest.fail(message, pytrace=True)


@dataclass(frozen=True)
class Lane:
    lane: str
    derived: str  # what the folder and fixtures need; below ``lane`` when the test is marked higher


lane_key = pytest.StashKey[Lane]()
guard_key = pytest.StashKey[ProcessGuard]()
call_passed_key = pytest.StashKey[bool]()


def assign(items: list[pytest.Item]) -> None:
    """Gives each test its lane's mark, or stops the run at a test whose marks contradict it."""
    problems = []
    for item in items:
        explicit = sorted({mark.name for mark in item.iter_markers() if mark.name in LANES}, key=LANES.index)
        derived = derived_lane(item)
        if len(explicit) > 1:
            problems.append(f"{item.nodeid}: marked {' and '.join(explicit)}; a test has one lane")
            continue
        lane = explicit[0] if explicit else derived
        if highest(lane, derived) != lane:
            problems.append(f"{item.nodeid}: marked {lane}, but its folder or fixtures need {derived}")
            continue
        if not explicit:
            item.add_marker(getattr(pytest.mark, lane))
        item.stash[lane_key] = Lane(lane, derived)
    if problems:
        raise pytest.UsageError("test lanes:\n  " + "\n  ".join(problems))


def claim_unmet(lane: Lane, started: list[Started]) -> str | None:
    """Why a test marked above what its folder and fixtures need did not need the mark, if so."""
    if lane.lane == lane.derived:
        return None
    if lane.lane == "agent" and started:
        return None
    if lane.lane != "agent" and any(process.kind == "other" for process in started):
        return None
    below = "agent" if started else "unit"
    return f"marked {lane.lane}, but it started no process that needs it: it belongs to {below}"


# --- hooks (tests/conftest.py hands them to pytest) ---------------------------


def configure(config: pytest.Config) -> None:
    guard = ProcessGuard()
    guard.install()
    config.stash[guard_key] = guard
    config.add_cleanup(guard.uninstall)


def runtest_protocol(item: pytest.Item) -> Generator[None, object, object]:
    guard = item.config.stash[guard_key]
    guard.lane, guard.started, guard.refused = item.stash[lane_key].lane, [], []
    try:
        return (yield)
    finally:
        guard.lane = None


def runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    report = yield
    guard = item.config.stash[guard_key]
    if guard.refused and not report.failed:  # refused where the test swallowed the failure
        report.outcome, report.longrepr = "failed", "\n".join(guard.refused)
    guard.refused = []
    if call.when == "call":
        item.stash[call_passed_key] = report.passed
    elif call.when == "teardown" and item.stash.get(call_passed_key, False) and not report.failed:
        unmet = claim_unmet(item.stash[lane_key], guard.started)
        if unmet:
            report.outcome, report.longrepr = "failed", f"{item.nodeid}: {unmet}"
    return report
