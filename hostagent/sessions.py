"""A PTY session: one process under a PTY, its output kept in a replay buffer and fanned out.

Output is never dropped for an attached subscriber: each has a bounded queue, and while any
queue is full the master is not read, so the process blocks on write like on a real terminal.
With nobody attached the output is still read, into the replay buffer only.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from hostagent.blocking import run_blocking
from hostagent.errors import FailedPrecondition, ResourceExhausted
from hostagent.procs import session_members
from hostagent.recorder import Recorder
from hostagent.replay import DEFAULT_LIMIT, ReplayBuffer
from hostagent.spawn import set_window_size
from hostagent.subscribers import Exited, Output, Subscriber, backlog

log = logging.getLogger(__name__)

READ_CHUNK = 64 * 1024
INPUT_LIMIT = 1024 * 1024
# After the process exits, other processes may still hold the terminal open: stop reading
# once the master has been quiet this long, or after DRAIN_MAX of continuous output.
DRAIN_IDLE = 0.1
DRAIN_MAX = 2.0
# How long output waits for a new stream once the last one is gone and the buffer is full.
ORPHAN_GRACE = 5.0


@dataclass(frozen=True)
class Origin:
    """What the session was started as, and by whom (free text from the control plane)."""

    cmd: str
    args: tuple[str, ...] = ()
    owner: str = ""


class PtySession:
    def __init__(
        self,
        sandbox_id: str,
        tag: str,
        pid: int,
        master_fd: int,
        on_finish: Callable[[PtySession], None],
        origin: Origin | None = None,
        replay_limit: int = DEFAULT_LIMIT,
        recorder: Recorder | None = None,
    ) -> None:
        self.sandbox_id = sandbox_id
        # Records from the master itself: complete and in order, whoever is attached.
        self.recorder = recorder
        self.tag = tag
        self.pid = pid
        self.origin = origin or Origin(cmd="")
        self.started_at_ms = time.time_ns() // 1_000_000
        # Output read from the terminal (also the offset of the next byte) and input written to it.
        self.offset = 0
        self.bytes_in = 0
        self.exit_code: int | None = None
        self.output = ReplayBuffer(replay_limit)
        self.finished = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._master = master_fd
        self._on_finish = on_finish
        self._subscribers: set[Subscriber] = set()
        # When the last stream went away (None while one is attached); see update_reader.
        self._orphaned_at: float | None = self._loop.time()
        self._orphan_timer: asyncio.TimerHandle | None = None
        self._reading = False
        self._eof = False
        self._child_code: int | None = None
        self._exited_at = 0.0
        self._last_data_at = 0.0
        self._drain_timer: asyncio.TimerHandle | None = None
        self._input: deque[tuple[memoryview, asyncio.Future[None]]] = deque()
        self._input_bytes = 0
        self._writing = False
        self._closing = False
        # A pidfd tells us when the child exits without a process-wide SIGCHLD handler.
        self._pidfd = os.pidfd_open(pid)
        self._loop.add_reader(self._pidfd, self._on_child_exit)

    @property
    def running(self) -> bool:
        return self._child_code is None

    def start(self) -> None:
        self.update_reader()

    # Subscribers

    def subscribe(self, resume_from: int | None = None) -> Subscriber:
        """A new subscriber, first given the buffered output from `resume_from` (if given), then
        live output.

        Synchronous, so no byte can be read between the snapshot and the registration: the
        buffered part and the live part meet exactly.
        """
        subscriber = Subscriber(self.update_reader)
        for event in backlog(self.output, resume_from):
            subscriber.push(event)
        if self.exit_code is not None:
            subscriber.push(Exited(self.exit_code))
        else:
            self._subscribers.add(subscriber)
            self._orphaned_at = None
            self.update_reader()
        return subscriber

    @property
    def streams(self) -> int:
        """Attached subscribers (PtyAttach streams) of a running session."""
        return len(self._subscribers)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.discard(subscriber)
        if not self._subscribers and self._orphaned_at is None:
            self._orphaned_at = self._loop.time()
        self.update_reader()

    # Output

    def read_output(self, offset: int, max_bytes: int, neutralise: bool = False) -> tuple[int, bytes]:
        """Up to `max_bytes` of buffered output from `offset` (or the buffer's start, if later)."""
        if neutralise:
            return self.output.read_neutralised(offset, max_bytes)
        return self.output.read(offset, max_bytes)

    def _held_for_successor(self) -> bool:
        """Whether to stop reading because nobody is attached and the buffer would lose bytes.

        When the control-plane worker that read this session dies, another one attaches a
        moment later and resumes from the byte its viewers reached. Until it does (at most
        ORPHAN_GRACE), a full buffer is not overwritten: the writer blocks, as on a terminal
        nobody reads. After that the session runs on, keeping only its latest output.
        """
        if not self._within_orphan_grace() or self.output.end - self.output.start < self.output.limit:
            return False
        if self._orphan_timer is None:
            assert self._orphaned_at is not None  # noqa: S101 - within the grace period
            remaining = self._orphaned_at + ORPHAN_GRACE - self._loop.time()
            self._orphan_timer = self._loop.call_later(remaining, self._orphan_grace_over)
        return True

    def _within_orphan_grace(self) -> bool:
        return (
            not self._subscribers
            and self._orphaned_at is not None
            and self._loop.time() < self._orphaned_at + ORPHAN_GRACE
        )

    def _orphan_grace_over(self) -> None:
        self._orphan_timer = None
        self.update_reader()

    def update_reader(self) -> None:
        """Read the master only while every subscriber has room (backpressure)."""
        want = (
            not self._eof
            and self.exit_code is None
            and not any(s.full() for s in self._subscribers)
            and not self._held_for_successor()
        )
        if want and not self._reading:
            self._loop.add_reader(self._master, self._on_readable)
        elif not want and self._reading:
            self._loop.remove_reader(self._master)
        self._reading = want

    def _on_readable(self) -> None:
        size = READ_CHUNK
        if self._within_orphan_grace():  # read no more than the buffer can keep
            size = max(1, min(size, self.output.limit - (self.output.end - self.output.start)))
        data = self._read(size)
        if data is None:
            return
        if not data:
            self._eof = True
            self.update_reader()
            self._maybe_finish()
            return
        event = Output(data, self.offset)
        self.offset += len(data)
        self.output.append(data)
        if self.recorder is not None:
            self.recorder.output(data)
        self._last_data_at = self._loop.time()
        for subscriber in self._subscribers:
            subscriber.push(event)
        self.update_reader()

    def _read(self, size: int) -> bytes | None:
        """Up to ``size`` bytes: what the terminal has now, or b"" at its end, or None for nothing.

        A PTY hands out at most a few KiB a read; reading on until it has no more (or ``size``)
        makes one event of a burst, which every hop after this one carries for the cost of one.
        """
        parts: list[bytes] = []
        got = 0
        while got < size:
            try:
                part = os.read(self._master, size - got)
            except BlockingIOError:
                break
            except OSError as exc:
                # EIO: every process holding the terminal has closed it.
                if exc.errno != errno.EIO:
                    log.warning("reading pty %s/%s failed: %s", self.sandbox_id, self.tag, exc)
                part = b""
            if not part:
                if parts:  # the end comes with the next read
                    break
                return b""
            parts.append(part)
            got += len(part)
        if not parts:
            return None
        return parts[0] if len(parts) == 1 else b"".join(parts)

    # Exit

    def _on_child_exit(self) -> None:
        # WNOWAIT leaves the child a zombie until the session finishes, so its pid (our process
        # group and session id for kill) cannot be reused while the session is known as running.
        result = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        if result is None:
            return
        self._loop.remove_reader(self._pidfd)
        if result.si_code == os.CLD_EXITED:
            self._child_code = result.si_status
        else:
            self._child_code = 128 + result.si_status
        self._exited_at = self._loop.time()
        self._fail_input(FailedPrecondition(f"pty session {self.tag} has exited"))
        self._maybe_finish()

    def _maybe_finish(self) -> None:
        if self._child_code is None or self.exit_code is not None:
            return
        if self._eof:
            self._finish()
        elif self._drain_timer is None:
            self._drain_timer = self._loop.call_later(DRAIN_IDLE, self._drain_check)

    def _drain_check(self) -> None:
        self._drain_timer = None
        now = self._loop.time()
        quiet = now - max(self._last_data_at, self._exited_at) >= DRAIN_IDLE
        # While a subscriber is full the master is not read: wait for it rather than drop.
        if self._eof or self._closing or (self._reading and (quiet or now - self._exited_at >= DRAIN_MAX)):
            self._finish()
        else:
            self._drain_timer = self._loop.call_later(DRAIN_IDLE, self._drain_check)

    def _finish(self) -> None:
        if self._child_code is None:
            return
        if self._drain_timer is not None:
            self._drain_timer.cancel()
            self._drain_timer = None
        if self._orphan_timer is not None:
            self._orphan_timer.cancel()
            self._orphan_timer = None
        self.exit_code = self._child_code
        self.update_reader()
        if self._writing:
            self._loop.remove_writer(self._master)
            self._writing = False
        # Closing the master hangs up anything still holding the terminal.
        os.close(self._master)
        os.close(self._pidfd)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)
        if self.recorder is not None:
            self.recorder.finish(self.exit_code)
        event = Exited(self.exit_code)
        for subscriber in self._subscribers:
            subscriber.push(event)
        self._subscribers.clear()
        self.finished.set()
        log.info("pty %s/%s exited with %d", self.sandbox_id, self.tag, self.exit_code)
        self._on_finish(self)

    # Input, resize, kill

    async def write(self, data: bytes) -> None:
        """Queue `data` after all earlier input; return once the terminal has taken all of it."""
        if not self.running:
            raise FailedPrecondition(f"pty session {self.tag} has exited")
        # One request may exceed the limit on its own; it only bounds input piling up behind it.
        if self._input_bytes and self._input_bytes + len(data) > INPUT_LIMIT:
            raise ResourceExhausted(
                f"pty session {self.tag} has {self._input_bytes} bytes of input the process has not read"
            )
        if not data:
            return
        if self.recorder is not None:
            self.recorder.input(data)
        future: asyncio.Future[None] = self._loop.create_future()
        # A caller that stopped waiting (shield below) must not leave an unretrieved error.
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._input.append((memoryview(data), future))
        self._input_bytes += len(data)
        self._flush_input()
        # If the caller goes away the bytes stay queued: input is never dropped or reordered.
        await asyncio.shield(future)

    def _flush_input(self) -> None:
        while self._input:
            view, future = self._input[0]
            try:
                written = os.write(self._master, view)
            except BlockingIOError:
                written = 0
            except OSError as exc:
                self._fail_input(FailedPrecondition(f"writing to pty session {self.tag} failed: {exc}"))
                return
            self._input_bytes -= written
            self.bytes_in += written
            if written < len(view):
                self._input[0] = (view[written:], future)
                if not self._writing:
                    self._loop.add_writer(self._master, self._flush_input)
                    self._writing = True
                return
            self._input.popleft()
            if not future.done():
                future.set_result(None)
        if self._writing:
            self._loop.remove_writer(self._master)
            self._writing = False

    def _fail_input(self, error: Exception) -> None:
        while self._input:
            _view, future = self._input.popleft()
            if not future.done():
                future.set_exception(error)
        self._input_bytes = 0
        if self._writing:
            self._loop.remove_writer(self._master)
            self._writing = False

    def resize(self, cols: int, rows: int) -> None:
        if not self.running:
            raise FailedPrecondition(f"pty session {self.tag} has exited")
        set_window_size(self._master, cols, rows)
        if self.recorder is not None:
            self.recorder.resize(cols, rows)

    async def kill(self, closing: bool = False) -> list[int]:
        """SIGKILL the process group and every process in the session (background jobs too).

        `closing` (the sandbox or the agent goes away) ends the session as soon as the process
        is gone, without waiting for a full subscriber to take the rest of the output.
        Returns the pids signalled.
        """
        if self.exit_code is not None:
            return []
        # (A capsule or agent stopping marks its sessions itself: Lifecycle._kill_everything.)
        if self.recorder is not None and not closing and not self._closing:
            self.recorder.mark("kill")
        self._closing = self._closing or closing
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        # The kernel does not reuse a pid that is still some process's session or group id, so
        # the members found after the leader is reaped are still this session's.
        return await run_blocking(_kill_members, self.pid)


def _kill_members(sid: int) -> list[int]:
    """SIGKILL every process whose session or process group is `sid` (a /proc scan)."""
    pids = session_members(sid)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    return pids
