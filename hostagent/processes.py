"""Processes the API starts with pipes (exec): their output kept and fanned out, their exit, their
timeout, and the registry that names them by (sandbox_id, tag).

A process's stdout and stderr are read into one replay log, each record marked with its stream
and addressed by one offset over both, so a stream that attaches late (or again) resumes exactly
as a terminal does. Output is never dropped for an attached listener: each has a bounded queue,
and while any queue is full neither pipe is read, so the process blocks on write. With nobody
attached the output is still read, into the log only, which keeps the most recent bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from hostagent.blocking import run_blocking
from hostagent.errors import AlreadyExists, InvalidArgument, NotFound, ResourceExhausted
from hostagent.procs import process_table, session_members
from hostagent.replay import DEFAULT_LIMIT
from hostagent.retention import RETAIN_EXITED, Key, Retaining
from hostagent.spawn import Piped, close_quietly
from hostagent.subscribers import SUBSCRIBER_QUEUE_BYTES, Missed

log = logging.getLogger(__name__)

STDOUT = 0
STDERR = 1
READ_CHUNK = 64 * 1024
# The agent's defaults (--process-buffer, --max-processes): what a sandbox's processes may make
# the agent hold is about MAX_PROCESSES * 2 (running and ended) * PROCESS_BUFFER, 32 MiB.
PROCESS_BUFFER = 256 * 1024
MAX_PROCESSES = 64
# Replayed output goes out in pieces no larger than this.
BACKLOG_CHUNK = 64 * 1024
# Once the process has exited, descendants may still hold its pipes open: stop reading once they
# have been quiet this long, or after DRAIN_MAX of continuous output (as for terminals).
DRAIN_IDLE = 0.1
DRAIN_MAX = 2.0


@dataclass(frozen=True)
class Chunk:
    stream: int
    data: bytes
    offset: int


@dataclass(frozen=True)
class Ended:
    exit_code: int
    timed_out: bool


Event = Chunk | Missed | Ended


@dataclass(frozen=True)
class ProcessOrigin:
    cmd: str
    args: tuple[str, ...] = ()
    owner: str = ""


class OutputLog:
    """The most recent output of both streams (at most `limit` bytes), by absolute offset."""

    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        self.limit = limit
        self.start = 0
        self.end = 0
        self._records: deque[Chunk] = deque()

    def append(self, stream: int, data: bytes) -> Chunk:
        chunk = Chunk(stream, data, self.end)
        self._records.append(chunk)
        self.end += len(data)
        while self.end - self.start > self.limit and self._records:
            first = self._records[0]
            excess = self.end - self.start - self.limit
            if len(first.data) <= excess:
                self._records.popleft()
                self.start += len(first.data)
            else:
                self._records[0] = Chunk(first.stream, first.data[excess:], first.offset + excess)
                self.start += excess
        return chunk

    def since(self, offset: int) -> list[Event]:
        """What a listener resuming at `offset` gets first: a `Missed` if those bytes are gone,
        then the kept chunks from there, in pieces of at most BACKLOG_CHUNK."""
        if offset > self.end:
            raise InvalidArgument(f"offset {offset} is beyond the end of the output ({self.end} bytes)")
        events: list[Event] = []
        if offset < self.start:
            events.append(Missed(offset=self.start, bytes=self.start - offset))
            offset = self.start
        for record in self._records:
            record_end = record.offset + len(record.data)
            if record_end <= offset:
                continue
            data = record.data[max(0, offset - record.offset) :]
            at = max(offset, record.offset)
            events.extend(
                Chunk(record.stream, data[cut : cut + BACKLOG_CHUNK], at + cut)
                for cut in range(0, len(data), BACKLOG_CHUNK)
            )
        return events


class Listener:
    """One attached stream's queue; output stops being read while it holds `limit` bytes."""

    def __init__(self, on_take: Callable[[], None], limit: int = SUBSCRIBER_QUEUE_BYTES) -> None:
        self._on_take = on_take
        self._limit = limit
        self._bytes = 0
        self._items: deque[Event] = deque()
        self._ready = asyncio.Event()

    def full(self) -> bool:
        return self._bytes >= self._limit

    def push(self, event: Event) -> None:
        self._items.append(event)
        if isinstance(event, Chunk):
            self._bytes += len(event.data)
        self._ready.set()

    async def get(self) -> Event:
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        event = self._items.popleft()
        if isinstance(event, Chunk):
            self._bytes -= len(event.data)
        self._on_take()
        return event


class ProcessSession:
    """One process with pipes, leader of a session of its own; `pid` is the host's pid and
    `visible_pid` the one its capsule sees."""

    def __init__(
        self,
        sandbox_id: str,
        tag: str,
        piped: Piped,
        visible_pid: int,
        origin: ProcessOrigin,
        on_finish: Callable[[ProcessSession], None],
        replay_limit: int = DEFAULT_LIMIT,
        timeout: float = 0.0,
    ) -> None:
        self.sandbox_id = sandbox_id
        self.tag = tag
        self.pid = piped.pid
        self.visible_pid = visible_pid
        self.origin = origin
        self.started_at_ms = time.time_ns() // 1_000_000
        self.output = OutputLog(replay_limit)
        self.exit_code: int | None = None
        self.timed_out = False
        self.finished = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._on_finish = on_finish
        self._fds = {STDOUT: piped.stdout_fd, STDERR: piped.stderr_fd}
        self._open = set(self._fds)
        self._reading: set[int] = set()
        self._listeners: set[Listener] = set()
        self._child_code: int | None = None
        self._exited_at = 0.0
        self._last_data_at = 0.0
        self._drain_timer: asyncio.TimerHandle | None = None
        self._timeout_timer: asyncio.TimerHandle | None = None
        self._closing = False
        self._pidfd = os.pidfd_open(self.pid)
        self._loop.add_reader(self._pidfd, self._on_child_exit)
        if timeout > 0:
            self._timeout_timer = self._loop.call_later(timeout, self._time_out)

    @property
    def running(self) -> bool:
        return self._child_code is None

    # Listeners

    def listen(self, resume_from: int | None = None) -> Listener:
        """A new listener, first given the kept output from `resume_from` (if given), then live
        output. Synchronous, so the kept part and the live part meet exactly."""
        listener = Listener(self.update_readers)
        if resume_from is not None:
            for event in self.output.since(resume_from):
                listener.push(event)
        if self.exit_code is not None:
            listener.push(Ended(self.exit_code, self.timed_out))
        else:
            self._listeners.add(listener)
            self.update_readers()
        return listener

    def unlisten(self, listener: Listener) -> None:
        self._listeners.discard(listener)
        self.update_readers()

    @property
    def listeners(self) -> int:
        return len(self._listeners)

    # Output

    def update_readers(self) -> None:
        """Read the pipes only while every listener has room (backpressure)."""
        want = self.exit_code is None and not any(listener.full() for listener in self._listeners)
        for stream in list(self._open):
            fd = self._fds[stream]
            if want and stream not in self._reading:
                self._loop.add_reader(fd, self._on_readable, stream)
                self._reading.add(stream)
            elif not want and stream in self._reading:
                self._loop.remove_reader(fd)
                self._reading.discard(stream)

    def _on_readable(self, stream: int) -> None:
        fd = self._fds[stream]
        try:
            data = os.read(fd, READ_CHUNK)
        except BlockingIOError:
            return
        except OSError as exc:
            log.warning("reading process %s/%s failed: %s", self.sandbox_id, self.tag, exc)
            data = b""
        if not data:
            self._close_stream(stream)
            self._maybe_finish()
            return
        chunk = self.output.append(stream, data)
        self._last_data_at = self._loop.time()
        for listener in self._listeners:
            listener.push(chunk)
        self.update_readers()

    def _close_stream(self, stream: int) -> None:
        if stream in self._reading:
            self._loop.remove_reader(self._fds[stream])
            self._reading.discard(stream)
        if stream in self._open:
            self._open.discard(stream)
            os.close(self._fds[stream])

    # Exit

    def _on_child_exit(self) -> None:
        # WNOWAIT: the pid (the group and session id `kill` signals) stays ours until the end.
        result = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        if result is None:
            return
        self._loop.remove_reader(self._pidfd)
        if result.si_code == os.CLD_EXITED:
            self._child_code = result.si_status
        else:
            self._child_code = 128 + result.si_status
        self._exited_at = self._loop.time()
        self._maybe_finish()

    def _maybe_finish(self) -> None:
        if self._child_code is None or self.exit_code is not None:
            return
        if not self._open:
            self._finish()
        elif self._drain_timer is None:
            self._drain_timer = self._loop.call_later(DRAIN_IDLE, self._drain_check)

    def _drain_check(self) -> None:
        self._drain_timer = None
        now = self._loop.time()
        quiet = now - max(self._last_data_at, self._exited_at) >= DRAIN_IDLE
        reading = bool(self._reading) or not self._open
        # While a listener is full the pipes are not read: wait for it rather than drop output.
        if not self._open or self._closing or (reading and (quiet or now - self._exited_at >= DRAIN_MAX)):
            self._finish()
        else:
            self._drain_timer = self._loop.call_later(DRAIN_IDLE, self._drain_check)

    def _finish(self) -> None:
        if self._child_code is None or self.exit_code is not None:
            return
        for timer in (self._drain_timer, self._timeout_timer):
            if timer is not None:
                timer.cancel()
        self._drain_timer = self._timeout_timer = None
        self.exit_code = self._child_code
        for stream in list(self._open):
            self._close_stream(stream)
        close_quietly(self._pidfd)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)
        event = Ended(self.exit_code, self.timed_out)
        for listener in self._listeners:
            listener.push(event)
        self._listeners.clear()
        self.finished.set()
        log.info("process %s/%s exited with %d", self.sandbox_id, self.tag, self.exit_code)
        self._on_finish(self)

    def _time_out(self) -> None:
        self._timeout_timer = None
        if self.exit_code is None:
            self.timed_out = True
            log.info("process %s/%s timed out; killing its process group", self.sandbox_id, self.tag)
            task = self._loop.create_task(self.signal(signal.SIGKILL))
            task.add_done_callback(lambda t: t.cancelled() or t.exception())

    # Signals

    async def kill(self, closing: bool = False) -> list[int]:
        return await self.signal(signal.SIGKILL, closing)

    async def signal(self, signum: int, closing: bool = False) -> list[int]:
        """Send `signum` to the process's group and every process of its session (background
        jobs too); returns the host pids signalled. `closing` (the sandbox or the agent goes
        away) ends the session as soon as the process is gone."""
        if self.exit_code is not None:
            return []
        self._closing = self._closing or closing
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signum)
        # The kernel reuses no pid that is still a session or group id: these are still ours.
        return await run_blocking(_signal_members, self.pid, signum)


def _signal_members(sid: int, signum: int) -> list[int]:
    """Signal the members of session `sid` outside its leader's process group (killpg reached
    those already: a second signal would hit a trap twice); returns every member."""
    table = process_table()
    pids = session_members(sid, table)
    for pid in pids:
        if table[pid].pgid == sid:
            continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)
    return pids


class ProcessRegistry(Retaining[ProcessSession]):
    """Processes by (sandbox_id, tag); exited ones are kept RETAIN_EXITED for late attaches."""

    kind = "processes"

    def __init__(
        self,
        retain_exited: float = RETAIN_EXITED,
        replay_limit: int = PROCESS_BUFFER,
        max_live: int = MAX_PROCESSES,
    ) -> None:
        super().__init__(retain_exited)
        self._replay_limit = replay_limit
        # Running processes per sandbox, and ended ones kept: each holds up to replay_limit bytes.
        self._max_live = max_live
        self._starting: set[Key] = set()

    def _check_room(self, sandbox_id: str) -> None:
        running = sum(1 for s in self._items.values() if s.sandbox_id == sandbox_id and s.running)
        running += sum(1 for key in self._starting if key[0] == sandbox_id)
        if running >= self._max_live:
            raise ResourceExhausted(
                f"too many processes: sandbox {sandbox_id} runs {running} started by the API "
                f"(at most {self._max_live}); wait for one to exit or kill one"
            )

    def _on_finish(self, item: ProcessSession) -> None:
        super()._on_finish(item)
        ended = [s for s in self._items.values() if s.sandbox_id == item.sandbox_id and not s.running]
        ended.sort(key=lambda s: s.started_at_ms)
        for old in ended[: max(0, len(ended) - self._max_live)]:
            key = (old.sandbox_id, old.tag)
            timer = self._expiry.pop(key, None)
            if timer is not None:
                timer.cancel()
            self._forget(key, old)

    async def start(
        self,
        sandbox_id: str,
        tag: str,
        start: Callable[[], Awaitable[Piped]],
        visible_pid: Callable[[int], int],
        origin: ProcessOrigin,
        time_limit: float,
        listen: bool,
    ) -> tuple[ProcessSession, Listener | None]:
        """Start a process; with `listen`, a listener is attached before its first byte is read."""
        key = (sandbox_id, tag)
        if key in self._items or key in self._starting:
            raise AlreadyExists(f"process {tag} already exists")
        self._check_room(sandbox_id)
        self._starting.add(key)
        try:
            piped = await start()
        except OSError as exc:  # pipes or fork: out of descriptors or processes
            raise ResourceExhausted(f"cannot start '{origin.cmd}': {exc.strerror or exc}") from exc
        finally:
            self._starting.discard(key)
        try:
            session = ProcessSession(
                sandbox_id,
                tag,
                piped,
                visible_pid(piped.pid),
                origin,
                self._on_finish,
                self._replay_limit,
                time_limit,
            )
        except OSError as exc:  # pidfd_open: out of descriptors
            with contextlib.suppress(ProcessLookupError):
                os.killpg(piped.pid, signal.SIGKILL)
            await run_blocking(os.waitpid, piped.pid, 0)
            close_quietly(piped.stdout_fd, piped.stderr_fd)
            raise ResourceExhausted(f"cannot start '{origin.cmd}': {exc.strerror or exc}") from exc
        self._items[key] = session
        listener = session.listen() if listen else None
        session.update_readers()
        log.info("process %s/%s started: pid %d, %s", sandbox_id, tag, piped.pid, origin.cmd)
        return session, listener

    def get(self, sandbox_id: str, tag: str) -> ProcessSession:
        session = self._items.get((sandbox_id, tag))
        if session is None:
            raise NotFound(f"process {tag} not found")
        return session

    def by_pid(self, sandbox_id: str, visible_pid: int) -> ProcessSession | None:
        """The process started with this pid, the running one first."""
        found = [
            s for s in self._items.values() if s.sandbox_id == sandbox_id and s.visible_pid == visible_pid
        ]
        found.sort(key=lambda s: (not s.running, -s.started_at_ms))
        return found[0] if found else None

    def processes(self, sandbox_id: str) -> list[ProcessSession]:
        return sorted(
            (s for s in self._items.values() if s.sandbox_id == sandbox_id),
            key=lambda s: (s.started_at_ms, s.tag),
        )

    def live_pids(self, sandbox_id: str) -> list[int]:
        return [s.pid for s in self._items.values() if s.sandbox_id == sandbox_id and s.running]
