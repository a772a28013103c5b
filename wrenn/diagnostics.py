"""A look inside a running worker, off by default: with WRENN_DIAGNOSTICS_FILE set, SIGUSR1 makes
the process write a JSON snapshot of its event loop's tasks (how many of each kind, and where they
wait) and its resident memory to that file.

A signal and a file rather than an endpoint: nothing new listens, so nothing is exposed to the
network (behind a proxy on the same machine every request looks like loopback), and reading it
takes the rights to signal the process and to read its files. A leak of connections shows as
tasks that stay after the sockets are gone (tests/integration/test_terminal_fuzz.py).
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import os
import signal
import time
from pathlib import Path
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

SIGNAL = signal.SIGUSR1
# In the file's name, replaced by the process id: several workers can share one setting.
PID = "{pid}"


def snapshot_path(template: str, pid: int | None = None) -> Path:
    return Path(template.replace(PID, str(os.getpid() if pid is None else pid)))


def rss_bytes() -> int | None:
    """The process's resident memory now (Linux), not its peak; None where /proc has no statm."""
    try:
        fields = Path("/proc/self/statm").read_text().split()
    except OSError:
        return None
    return int(fields[1]) * os.sysconf("SC_PAGE_SIZE")


def _task_kind(task: asyncio.Task[Any]) -> str:
    """What a task runs, as ``module:qualified name`` of its coroutine (``pty.consumers:PtyConsumer.
    _keepalive``): tasks without a name of their own are all "Task-<n>". Its name where it runs
    something else."""
    coro = task.get_coro()
    qualname = getattr(coro, "__qualname__", None)
    if qualname is None:
        return task.get_name()
    frame = getattr(coro, "cr_frame", None)
    module = frame.f_globals.get("__name__", "") if frame is not None else ""
    return f"{module}:{qualname}" if module else qualname


# Places kept per kind of task in a snapshot's "waits", and coroutines followed down one await chain.
WAITS_PER_KIND = 10
AWAIT_DEPTH = 200


def _waiting_at(task: asyncio.Task[Any]) -> str:
    """Where a task waits: the innermost coroutine of its chain of awaits, as ``module:line function``,
    and what that coroutine awaits when it is not another coroutine (a Future, a Task)."""
    awaited: Any = task.get_coro()
    where = ""
    for _ in range(AWAIT_DEPTH):
        frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "ag_frame", None)
        if frame is None:
            return f"{where} awaiting {type(awaited).__name__}" if where and awaited is not None else where
        where = f"{frame.f_globals.get('__name__', '?')}:{frame.f_lineno} {frame.f_code.co_name}"
        awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "ag_await", None)
        if awaited is None:
            return where
    return where


def snapshot(loop: asyncio.AbstractEventLoop) -> dict[str, Any]:
    tasks = asyncio.all_tasks(loop)
    kinds = collections.Counter(_task_kind(task) for task in tasks)
    waits: dict[str, list[str]] = collections.defaultdict(list)
    for task in tasks:
        places = waits[_task_kind(task)]
        if len(places) < WAITS_PER_KIND:
            places.append(_waiting_at(task))
    return {
        "pid": os.getpid(),
        "time": time.time(),
        "tasks": len(tasks),
        "task_kinds": dict(kinds.most_common()),
        # Where the tasks of each kind wait (a few of each): what a task that stays is stuck on.
        "waits": {kind: sorted(places) for kind, places in waits.items()},
        "rss_bytes": rss_bytes(),
    }


def write_snapshot(template: str, loop: asyncio.AbstractEventLoop) -> None:
    """Writes the snapshot whole (a reader never sees half a file); a failure is logged, never raised
    into the loop that serves the sockets."""
    path = snapshot_path(template)
    partial = path.with_name(f".{path.name}.partial")
    try:
        partial.write_text(json.dumps(snapshot(loop)))
        partial.replace(path)
    except OSError as exc:
        log.warning("diagnostics: cannot write %s: %s", path, exc)


def install(template: str) -> bool:
    """Has SIGUSR1 write snapshots to ``template`` (``{pid}`` is the process id); nothing when it is
    empty. Whether it was installed: only the main thread can take a signal handler."""
    if not template:
        return False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        # Python runs this between two bytecodes of the main thread, maybe inside the loop's own
        # code: the snapshot is left to the loop as an ordinary callback.
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            log.warning("diagnostics: no event loop is running yet; no snapshot written")
            return
        loop.call_soon_threadsafe(write_snapshot, template, loop)

    try:
        signal.signal(SIGNAL, on_signal)
    except ValueError:  # not the main thread
        log.warning("diagnostics: WRENN_DIAGNOSTICS_FILE is set, but not in the main thread: not installed")
        return False
    log.info("diagnostics: SIGUSR1 writes a snapshot to %s", snapshot_path(template))
    return True
