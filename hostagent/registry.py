"""PTY sessions by (sandbox_id, tag): start, look up, keep exited ones for late attaches, tear down."""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Awaitable, Callable

from hostagent.blocking import run_blocking
from hostagent.errors import AlreadyExists, NotFound, ResourceExhausted
from hostagent.recorder import Recorder
from hostagent.replay import DEFAULT_LIMIT
from hostagent.retention import RETAIN_EXITED, Key, Retaining
from hostagent.sessions import Origin, PtySession
from hostagent.spawn import Spawned
from hostagent.subscribers import Subscriber

log = logging.getLogger(__name__)


class SessionRegistry(Retaining[PtySession]):
    kind = "pty sessions"

    def __init__(self, retain_exited: float = RETAIN_EXITED, replay_limit: int = DEFAULT_LIMIT) -> None:
        super().__init__(retain_exited)
        self._replay_limit = replay_limit
        self._starting: set[Key] = set()

    async def start(
        self,
        sandbox_id: str,
        tag: str,
        start: Callable[[], Awaitable[Spawned]],
        display: str,
        origin: Origin | None = None,
        recorder: Recorder | None = None,
    ) -> tuple[PtySession, Subscriber]:
        """Start a session with one subscriber attached before the first byte is read."""
        key = (sandbox_id, tag)
        if key in self._items or key in self._starting:
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
                sandbox_id,
                tag,
                spawned.pid,
                spawned.master_fd,
                self._on_finish,
                origin,
                self._replay_limit,
                recorder,
            )
        except OSError as exc:  # pidfd_open: out of descriptors
            os.kill(spawned.pid, signal.SIGKILL)
            # In a thread: a killed process ends only once it leaves the kernel (a cgroup write).
            await run_blocking(os.waitpid, spawned.pid, 0)
            os.close(spawned.master_fd)
            raise ResourceExhausted(f"cannot start '{display}': {exc.strerror or exc}") from exc
        self._items[key] = session
        subscriber = session.subscribe()
        session.start()
        log.info("pty %s/%s started: pid %d, %s", sandbox_id, tag, spawned.pid, display)
        return session, subscriber

    def get(self, sandbox_id: str, tag: str) -> PtySession:
        session = self._items.get((sandbox_id, tag))
        if session is None:
            raise NotFound(f"pty session {tag} not found")
        return session

    def live_count(self, sandbox_id: str) -> int:
        return sum(1 for s in self._items.values() if s.sandbox_id == sandbox_id and s.exit_code is None)

    def live_tags(self, sandbox_id: str) -> list[str]:
        """Tags of the sandbox's sessions whose process has not exited, sorted."""
        return sorted(
            s.tag for s in self._items.values() if s.sandbox_id == sandbox_id and s.exit_code is None
        )

    def live_pids(self, sandbox_id: str) -> list[int]:
        """Session leaders of the sandbox whose process has not exited."""
        return [s.pid for s in self._items.values() if s.sandbox_id == sandbox_id and s.running]

    def sessions(self, sandbox_id: str | None = None) -> list[PtySession]:
        """Live and recently exited sessions, of one sandbox or all, oldest first."""
        found = [s for s in self._items.values() if sandbox_id is None or s.sandbox_id == sandbox_id]
        return sorted(found, key=lambda s: (s.started_at_ms, s.sandbox_id, s.tag))
