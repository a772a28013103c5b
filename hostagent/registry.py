"""PTY sessions by (sandbox_id, tag): start, look up, keep exited ones for late attaches, tear down."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Awaitable, Callable

from hostagent.blocking import run_blocking
from hostagent.errors import AlreadyExists, NotFound, ResourceExhausted
from hostagent.replay import DEFAULT_LIMIT
from hostagent.sessions import Origin, PtySession
from hostagent.spawn import Spawned
from hostagent.subscribers import Subscriber

log = logging.getLogger(__name__)

Key = tuple[str, str]
# A late attach to a session that exited this recently still gets its exit code (and, resuming,
# the tail of its output).
RETAIN_EXITED = 60.0
KILL_TIMEOUT = 5.0


class SessionRegistry:
    def __init__(self, retain_exited: float = RETAIN_EXITED, replay_limit: int = DEFAULT_LIMIT) -> None:
        self._retain = retain_exited
        self._replay_limit = replay_limit
        self._sessions: dict[Key, PtySession] = {}
        self._starting: set[Key] = set()
        self._expiry: dict[Key, asyncio.TimerHandle] = {}

    async def start(
        self,
        sandbox_id: str,
        tag: str,
        start: Callable[[], Awaitable[Spawned]],
        display: str,
        origin: Origin | None = None,
    ) -> tuple[PtySession, Subscriber]:
        """Start a session with one subscriber attached before the first byte is read."""
        key = (sandbox_id, tag)
        if key in self._sessions or key in self._starting:
            raise AlreadyExists(f"pty session {tag} already exists")
        self._starting.add(key)
        try:
            spawned = await start()
        except OSError as exc:  # openpty or fork: out of PTYs, descriptors or processes
            raise ResourceExhausted(f"cannot start '{display}': {exc.strerror or exc}") from exc
        finally:
            self._starting.discard(key)
        try:
            session = PtySession(
                sandbox_id, tag, spawned.pid, spawned.master_fd, self._on_finish, origin, self._replay_limit
            )
        except OSError as exc:  # pidfd_open: out of descriptors
            os.kill(spawned.pid, signal.SIGKILL)
            # In a thread: a killed process ends only once it leaves the kernel (a cgroup write).
            await run_blocking(os.waitpid, spawned.pid, 0)
            os.close(spawned.master_fd)
            raise ResourceExhausted(f"cannot start '{display}': {exc.strerror or exc}") from exc
        self._sessions[key] = session
        subscriber = session.subscribe()
        session.start()
        log.info("pty %s/%s started: pid %d, %s", sandbox_id, tag, spawned.pid, display)
        return session, subscriber

    def get(self, sandbox_id: str, tag: str) -> PtySession:
        session = self._sessions.get((sandbox_id, tag))
        if session is None:
            raise NotFound(f"pty session {tag} not found")
        return session

    def live_count(self, sandbox_id: str) -> int:
        return sum(1 for s in self._sessions.values() if s.sandbox_id == sandbox_id and s.exit_code is None)

    def live_tags(self, sandbox_id: str) -> list[str]:
        """Tags of the sandbox's sessions whose process has not exited, sorted."""
        return sorted(
            s.tag for s in self._sessions.values() if s.sandbox_id == sandbox_id and s.exit_code is None
        )

    def live_pids(self, sandbox_id: str) -> list[int]:
        """Session leaders of the sandbox whose process has not exited."""
        return [s.pid for s in self._sessions.values() if s.sandbox_id == sandbox_id and s.running]

    def sessions(self, sandbox_id: str | None = None) -> list[PtySession]:
        """Live and recently exited sessions, of one sandbox or all, oldest first."""
        found = [s for s in self._sessions.values() if sandbox_id is None or s.sandbox_id == sandbox_id]
        return sorted(found, key=lambda s: (s.started_at_ms, s.sandbox_id, s.tag))

    def _on_finish(self, session: PtySession) -> None:
        key = (session.sandbox_id, session.tag)
        loop = asyncio.get_running_loop()
        self._expiry[key] = loop.call_later(self._retain, self._forget, key, session)

    def _forget(self, key: Key, session: PtySession) -> None:
        self._expiry.pop(key, None)
        if self._sessions.get(key) is session:
            del self._sessions[key]

    async def close_sandbox(self, sandbox_id: str) -> None:
        """Kill every session of the sandbox, wait for them to end and forget them."""
        await self._close([k for k in self._sessions if k[0] == sandbox_id])

    async def close_all(self) -> None:
        await self._close(list(self._sessions))

    async def _close(self, keys: list[Key]) -> None:
        sessions = [self._sessions[k] for k in keys]
        for session in sessions:
            await session.kill(closing=True)
        waits = [asyncio.create_task(s.finished.wait()) for s in sessions]
        if waits:
            _done, pending = await asyncio.wait(waits, timeout=KILL_TIMEOUT)
            for task in pending:
                task.cancel()
            if pending:
                log.warning("%d pty sessions did not end within %ss of SIGKILL", len(pending), KILL_TIMEOUT)
        for key, session in zip(keys, sessions, strict=True):
            timer = self._expiry.pop(key, None)
            if timer is not None:
                timer.cancel()
            if self._sessions.get(key) is session:
                del self._sessions[key]
