"""How a sandbox is paused: the cgroup freezer (v2, else v1), else SIGSTOP/SIGCONT.

With a cgroup, every process spawned for a sandbox joins `<root>/<sandbox_id>` before exec, so
its descendants (double-forked daemons included) are frozen and killed with it. The signal
fallback only reaches the sessions' process trees and their session members, and a stopped
process is visible to its parent (SIGCHLD), which is why it is the last resort.

The /proc scans and cgroup file operations run in threads (`hostagent.blocking`); each async
method returns once they are done, so a pause has taken effect when PauseSandbox answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import os
import re
import signal
import subprocess
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import ClassVar

from hostagent.blocking import run_blocking
from hostagent.procs import process_table, process_trees, state_of

log = logging.getLogger(__name__)

MECHANISMS = ("auto", "cgroup2", "cgroup1", "signals")
CGROUP_ROOT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)*$")
# How long pause waits for every process to be frozen before answering anyway.
SETTLE_TIMEOUT = 5.0
POLL = 0.01
RMDIR_TIMEOUT = 2.0
KILL_PASSES = 10
PROBE_TIMEOUT = 10.0
# /proc states of a process that is stopped, or gone but not yet reaped.
STOPPED = ("T", "t", "Z", "X")


class FreezerUnavailable(Exception):
    """The pause mechanism asked for cannot work on this host."""


class Freezer(ABC):
    name: ClassVar[str]

    def describe(self) -> str:
        return self.name

    def join_path(self, sandbox_id: str) -> str | None:
        """The cgroup.procs file a new process of the sandbox writes its pid to (created now).

        Blocking, like `close`: async callers run it with `run_blocking`.
        """
        return None

    @abstractmethod
    async def freeze(self, sandbox_id: str, leaders: Sequence[int]) -> None:
        """Freeze the sandbox; `leaders` are the pids of its live PTY sessions."""

    @abstractmethod
    async def thaw(self, sandbox_id: str, leaders: Sequence[int]) -> None: ...

    @abstractmethod
    async def kill_all(self, sandbox_id: str, leaders: Sequence[int]) -> int:
        """SIGKILL every process of the sandbox so it dies even if frozen; return how many."""

    async def release(self, sandbox_id: str, pids: Sequence[int]) -> None:
        """Let killed processes of a frozen sandbox die (only cgroup v1 needs to act)."""
        return  # nothing to do without a cgroup

    async def remove(self, sandbox_id: str) -> None:
        """Remove the sandbox's empty cgroup, if it has one."""
        return  # nothing to do without a cgroup

    def close(self) -> None:
        """Remove the (empty) cgroup root at shutdown."""
        return  # nothing to do without a cgroup


class SignalFreezer(Freezer):
    name = "signals"

    def __init__(self) -> None:
        # What each paused sandbox's pause stopped, parents first: a job the user had stopped
        # (^Z) before the pause stays stopped after the resume.
        self._stopped: dict[str, list[int]] = {}

    def describe(self) -> str:
        return "signals (SIGSTOP/SIGCONT of each session's processes; no cgroup freezer here)"

    async def freeze(self, sandbox_id: str, leaders: Sequence[int]) -> None:
        # Parents first, and a generation only once the one above has stopped (a stop takes
        # effect later, in the target): a shell in wait() then never sees its job stop.
        # Repeat until a pass finds nothing new, as a process may fork before it is stopped.
        stopped = self._stopped.setdefault(sandbox_id, [])
        for _ in range(KILL_PASSES):
            todo, depth = await run_blocking(_unstopped_tree, leaders)
            if not todo:
                return
            for level in sorted({depth[pid] for pid in todo}):
                generation = [pid for pid in todo if depth[pid] == level]
                # Recorded first: a resume continues whatever this pass may have stopped.
                stopped.extend(generation)
                await run_blocking(_signal_all, generation, signal.SIGSTOP)
                if not await _settle(functools.partial(_all_stopped, generation)):
                    # In uninterruptible sleep, say; the pending SIGSTOP stops it when it wakes.
                    log.warning(
                        "sandbox %s: not every process stopped within %ss", sandbox_id, SETTLE_TIMEOUT
                    )
                    return
        log.warning("sandbox %s: processes kept appearing while it was being stopped", sandbox_id)

    async def thaw(self, sandbox_id: str, leaders: Sequence[int]) -> None:
        # Children first, so a shell resumes after its job is running again.
        children_first = self._stopped.pop(sandbox_id, [])[::-1]
        await run_blocking(_signal_all, children_first, signal.SIGCONT)

    async def kill_all(self, sandbox_id: str, leaders: Sequence[int]) -> int:
        killed = await run_blocking(_kill_trees, leaders)
        self._stopped.pop(sandbox_id, None)
        return killed


class CgroupFreezer(Freezer):
    """A cgroup per sandbox under `<hierarchy>/<root>/`."""

    def __init__(self, base: Path) -> None:
        self.base = base

    def describe(self) -> str:
        return f"{self.name} ({self.base})"

    def path(self, sandbox_id: str) -> Path:
        return self.base / sandbox_id

    def join_path(self, sandbox_id: str) -> str:
        path = self.path(sandbox_id)
        path.mkdir(exist_ok=True)
        return str(path / "cgroup.procs")

    def procs(self, sandbox_id: str) -> list[int]:
        try:
            text = (self.path(sandbox_id) / "cgroup.procs").read_text()
        except FileNotFoundError:
            return []
        return [int(line) for line in text.split()]

    async def kill_all(self, sandbox_id: str, leaders: Sequence[int]) -> int:
        return await run_blocking(self._kill_all, sandbox_id)

    def _kill_all(self, sandbox_id: str) -> int:
        killed: set[int] = set()
        for _ in range(KILL_PASSES):
            pids = [pid for pid in self.procs(sandbox_id) if pid not in killed]
            if not pids:
                break
            _signal_all(pids, signal.SIGKILL)
            killed.update(pids)
        # Killed and frozen under cgroup v1 means stuck: thaw so the SIGKILLs take effect.
        self._set_frozen(sandbox_id, False)
        return len(killed)

    async def freeze(self, sandbox_id: str, leaders: Sequence[int]) -> None:
        if not await run_blocking(self._start_freezing, sandbox_id):
            return  # nothing ever ran in it; a start is refused while the sandbox is paused
        if not await _settle(functools.partial(self._frozen, sandbox_id)):
            log.warning("sandbox %s is not fully frozen after %ss; it will be", sandbox_id, SETTLE_TIMEOUT)

    async def thaw(self, sandbox_id: str, leaders: Sequence[int]) -> None:
        await run_blocking(self._thaw, sandbox_id)

    def _start_freezing(self, sandbox_id: str) -> bool:
        if not self.path(sandbox_id).is_dir():
            return False
        self._set_frozen(sandbox_id, True)
        return True

    def _thaw(self, sandbox_id: str) -> None:
        if self.path(sandbox_id).is_dir():
            self._set_frozen(sandbox_id, False)

    async def remove(self, sandbox_id: str) -> None:
        path = self.path(sandbox_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RMDIR_TIMEOUT
        while True:
            try:
                await run_blocking(path.rmdir)
                return
            except FileNotFoundError:
                return
            except OSError as exc:
                # EBUSY while killed processes are still being torn down.
                if exc.errno != errno.EBUSY or loop.time() > deadline:
                    log.warning("cannot remove cgroup %s: %s", path, exc)
                    return
            await asyncio.sleep(POLL)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.base.rmdir()

    @abstractmethod
    def _set_frozen(self, sandbox_id: str, frozen: bool) -> None: ...

    @abstractmethod
    def _frozen(self, sandbox_id: str) -> bool: ...


class CgroupV2Freezer(CgroupFreezer):
    name = "cgroup2"

    def _kill_all(self, sandbox_id: str) -> int:
        count = len(self.procs(sandbox_id))
        kill_file = self.path(sandbox_id) / "cgroup.kill"
        if count and kill_file.exists():  # Linux 5.14+: kills forks racing with us too
            kill_file.write_text("1")
            self._set_frozen(sandbox_id, False)
            return count
        return super()._kill_all(sandbox_id)

    def _set_frozen(self, sandbox_id: str, frozen: bool) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.path(sandbox_id) / "cgroup.freeze").write_text("1" if frozen else "0")

    def _frozen(self, sandbox_id: str) -> bool:
        events = (self.path(sandbox_id) / "cgroup.events").read_text()
        return "frozen 1" in events.splitlines()


class CgroupV1Freezer(CgroupFreezer):
    name = "cgroup1"

    async def release(self, sandbox_id: str, pids: Sequence[int]) -> None:
        await run_blocking(self._move_to_root, pids)

    def _move_to_root(self, pids: Sequence[int]) -> None:
        # A v1-frozen process ignores even SIGKILL; moved to the (thawed) root it dies at once.
        for pid in pids:
            with contextlib.suppress(OSError):
                (self.base / "cgroup.procs").write_text(str(pid))

    def _set_frozen(self, sandbox_id: str, frozen: bool) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.path(sandbox_id) / "freezer.state").write_text("FROZEN" if frozen else "THAWED")

    def _frozen(self, sandbox_id: str) -> bool:
        state = (self.path(sandbox_id) / "freezer.state").read_text().strip()
        if state == "FREEZING":
            # The kernel documentation's advice: write FROZEN again until it sticks.
            self._set_frozen(sandbox_id, True)
        return state == "FROZEN"


def _unstopped_tree(leaders: Sequence[int]) -> tuple[list[int], dict[int, int]]:
    """The leaders' processes not yet stopped, parents first, and every process's depth in its tree."""
    table = process_table()
    tree = process_trees(leaders, table)
    depth: dict[int, int] = {}
    for pid in tree:  # parents come first
        depth[pid] = depth.get(table[pid].ppid, -1) + 1
    return [pid for pid in tree if table[pid].state not in STOPPED], depth


def _kill_trees(leaders: Sequence[int]) -> int:
    pids = process_trees(leaders)
    _signal_all(pids, signal.SIGKILL)
    return len(pids)


def _all_stopped(pids: Sequence[int]) -> bool:
    return all(state_of(pid) in (None, *STOPPED) for pid in pids)


def _signal_all(pids: Sequence[int], signum: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)


async def _settle(done: Callable[[], bool]) -> bool:
    """Poll `done()` (blocking, so in a thread) until it is true or SETTLE_TIMEOUT passes.

    Polled because the kernel announces neither a v1 freeze nor a stopped process; the cgroup v2
    `cgroup.events` could be watched, but one loop for every mechanism is simpler.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SETTLE_TIMEOUT
    while not await run_blocking(done):
        if loop.time() > deadline:
            return False
        await asyncio.sleep(POLL)
    return True


# Choosing the mechanism


def _mounts() -> list[tuple[str, str, set[str]]]:
    """(mount point, filesystem type, options) of the cgroup mounts."""
    mounts = []
    with open("/proc/self/mounts") as mounts_file:
        for line in mounts_file:
            fields = line.split()
            if len(fields) >= 4 and fields[2] in ("cgroup", "cgroup2"):
                mounts.append((fields[1].replace("\\040", " "), fields[2], set(fields[3].split(","))))
    return mounts


def _own_v2_cgroup() -> str:
    with open("/proc/self/cgroup") as cgroup_file:
        for line in cgroup_file:
            if line.startswith("0::"):
                return line[3:].strip()
    return "/"


def _v2_base(root: str) -> Path | None:
    for mount, fstype, _options in _mounts():
        if fstype == "cgroup2":
            # Under our own cgroup: the directory systemd delegates to a unit with Delegate=yes.
            own = Path(mount) / _own_v2_cgroup().lstrip("/")
            return (own if own.is_dir() else Path(mount)) / root
    return None


def _v1_base(root: str) -> Path | None:
    for mount, fstype, options in _mounts():
        if fstype == "cgroup" and "freezer" in options:
            return Path(mount) / root
    return None


def _probe(freezer: CgroupFreezer, state_file: str) -> str | None:
    """Create the root and a probe cgroup, move a shell into it; return why that failed, or None."""
    probe_id = f"probe-{os.getpid()}"
    try:
        freezer.base.mkdir(parents=True, exist_ok=True)
        procs = freezer.join_path(probe_id)
        if not (freezer.path(probe_id) / state_file).exists():
            return f"{freezer.path(probe_id)} has no {state_file}"
        result = subprocess.run(  # noqa: S603 - fixed argv, no shell injection
            ["/bin/sh", "-c", 'echo $$ > "$1"', "sh", procs],
            capture_output=True,
            timeout=PROBE_TIMEOUT,
            check=False,
        )
        if result.returncode != 0:
            return f"cannot move a process into it: {result.stderr.decode(errors='replace').strip()}"
        freezer._set_frozen(probe_id, True)
        freezer._set_frozen(probe_id, False)
    except (OSError, subprocess.SubprocessError) as exc:
        return str(exc)
    finally:
        with contextlib.suppress(OSError):
            freezer.path(probe_id).rmdir()
    return None


def choose_freezer(name: str, cgroup_root: str) -> Freezer:
    """Pick the pause mechanism for `--pause-mechanism name` (auto: the first one that works)."""
    if name not in MECHANISMS:
        raise FreezerUnavailable(f"unknown pause mechanism {name!r} (expected {', '.join(MECHANISMS)})")
    if not CGROUP_ROOT_RE.match(cgroup_root) or ".." in cgroup_root.split("/"):
        raise FreezerUnavailable(f"invalid cgroup root {cgroup_root!r}: use a relative path of plain names")
    candidates: list[tuple[str, Path | None, type[CgroupFreezer], str]] = [
        ("cgroup2", _v2_base(cgroup_root), CgroupV2Freezer, "cgroup.freeze"),
        ("cgroup1", _v1_base(cgroup_root), CgroupV1Freezer, "freezer.state"),
    ]
    for mechanism, base, cls, state_file in candidates:
        if name not in ("auto", mechanism):
            continue
        problem = "no such hierarchy is mounted" if base is None else None
        if base is not None:
            freezer = cls(base)
            problem = _probe(freezer, state_file)
            if problem is None:
                return freezer
        if name == mechanism:
            raise FreezerUnavailable(f"the {mechanism} freezer cannot work here: {problem}")
        log.info("%s freezer unavailable: %s", mechanism, problem)
    return SignalFreezer()
