"""Sandbox lifecycle on this host: pause, resume, destroy, and clean-up at agent start and stop.

Create, session start, pause, resume, kill and destroy of one sandbox take that sandbox's lock,
so a pause never races a process being spawned into the sandbox's cgroup, and the freezer's work
in threads (see `hostagent.blocking`) is over before the next operation on the sandbox begins.

The paused state is kept in the sandbox directory. The agent kills every process when it stops
(and kills leftovers of a crashed run when it starts), so after a restart a paused sandbox is
still reported "paused", with no sessions, and refuses new sessions until ResumeSandbox: the
control plane, which owns the state machine, sees the state it last asked for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from hostagent.blocking import run_blocking
from hostagent.errors import AgentError, FailedPrecondition
from hostagent.freezer import Freezer
from hostagent.registry import SessionRegistry
from hostagent.sandboxes import SandboxStore, validate_sandbox_id
from hostagent.sessions import PtySession

log = logging.getLogger(__name__)

RUNNING = "running"
PAUSED = "paused"


@dataclass(frozen=True)
class SandboxStatus:
    sandbox_id: str
    state: str
    pty_sessions: int


class Lifecycle:
    def __init__(self, store: SandboxStore, registry: SessionRegistry, freezer: Freezer) -> None:
        self.store = store
        self.registry = registry
        self.freezer = freezer
        self._locks: dict[str, asyncio.Lock] = {}

    def _lock(self, sandbox_id: str) -> asyncio.Lock:
        return self._locks.setdefault(sandbox_id, asyncio.Lock())

    def state(self, sandbox_id: str) -> str:
        return PAUSED if self.store.paused(sandbox_id) else RUNNING

    def status(self, sandbox_id: str) -> SandboxStatus:
        return SandboxStatus(sandbox_id, self.state(sandbox_id), self.registry.live_count(sandbox_id))

    def statuses(self) -> list[SandboxStatus]:
        return [self.status(sandbox_id) for sandbox_id in self.store.ids()]

    def check_startable(self, sandbox_id: str) -> None:
        self.store.path(sandbox_id)
        if self.store.paused(sandbox_id):
            raise FailedPrecondition(f"sandbox {sandbox_id} is paused")

    async def create(self, sandbox_id: str) -> SandboxStatus:
        """Create the sandbox, or return the existing one; waits for a destroy of the same id."""
        validate_sandbox_id(sandbox_id)
        async with self._lock(sandbox_id):
            await self.store.create(sandbox_id)
            return self.status(sandbox_id)

    @contextlib.asynccontextmanager
    async def starting(self, sandbox_id: str) -> AsyncIterator[str | None]:
        """Hold the sandbox while a session is spawned; yields the cgroup.procs file to join."""
        self.store.path(sandbox_id)
        async with self._lock(sandbox_id):
            self.check_startable(sandbox_id)  # destroyed or paused while we waited
            try:
                join = await run_blocking(self.freezer.join_path, sandbox_id)
            except OSError as exc:
                raise AgentError(f"cannot create the cgroup of sandbox {sandbox_id}: {exc}") from exc
            yield join

    async def pause(self, sandbox_id: str) -> SandboxStatus:
        async with self._lock(sandbox_id):
            self.store.path(sandbox_id)
            if not self.store.paused(sandbox_id):
                leaders = self.registry.live_pids(sandbox_id)
                try:
                    await self.freezer.freeze(sandbox_id, leaders)
                    await self.store.set_paused(sandbox_id, True)
                except OSError as exc:
                    with contextlib.suppress(OSError):
                        await self.freezer.thaw(sandbox_id, leaders)
                    raise AgentError(f"cannot pause sandbox {sandbox_id}: {exc}") from exc
                log.info("paused sandbox %s (%d pty sessions)", sandbox_id, len(leaders))
            return self.status(sandbox_id)

    async def resume(self, sandbox_id: str) -> SandboxStatus:
        async with self._lock(sandbox_id):
            self.store.path(sandbox_id)
            if self.store.paused(sandbox_id):
                try:
                    await self.freezer.thaw(sandbox_id, self.registry.live_pids(sandbox_id))
                    await self.store.set_paused(sandbox_id, False)
                except OSError as exc:
                    raise AgentError(f"cannot resume sandbox {sandbox_id}: {exc}") from exc
                log.info("resumed sandbox %s", sandbox_id)
            return self.status(sandbox_id)

    async def kill(self, session: PtySession) -> None:
        if session.exit_code is not None:
            return  # nothing to kill (and no lock to make again for a destroyed sandbox)
        # Under the lock, a kill during a pause sees the paused state the pause ends in.
        async with self._lock(session.sandbox_id):
            pids = await session.kill()
            if self.store.paused(session.sandbox_id):
                await self.freezer.release(session.sandbox_id, pids)

    async def destroy(self, sandbox_id: str) -> None:
        self.store.path(sandbox_id)
        async with self._lock(sandbox_id):
            path = self.store.forget(sandbox_id)
            await self._kill_everything(sandbox_id)
            # Aside before the lock goes: a create waiting for it makes a fresh directory.
            trash = await self.store.trash(path)
            self._locks.pop(sandbox_id, None)
        await self.store.delete(trash)
        log.info("destroyed sandbox %s", sandbox_id)

    async def _kill_everything(self, sandbox_id: str) -> int:
        # Killed, then thawed (a cgroup-v1-frozen process dies only once thawed), then reaped.
        killed = await self.freezer.kill_all(sandbox_id, self.registry.live_pids(sandbox_id))
        await self.registry.close_sandbox(sandbox_id)
        await self.freezer.remove(sandbox_id)
        return killed

    async def recover(self) -> None:
        """At start: kill what a crashed run left in the sandboxes' cgroups."""
        for sandbox_id in self.store.ids():
            killed = await self._kill_everything(sandbox_id)
            if killed:
                log.warning(
                    "killed %d processes left over in sandbox %s by an earlier run", killed, sandbox_id
                )

    async def shutdown(self) -> None:
        """Kill every process of every sandbox; paused ones stay marked paused."""
        await asyncio.gather(*(self._kill_everything(i) for i in self.store.ids()))
        await self.registry.close_all()
        await run_blocking(self.freezer.close)
