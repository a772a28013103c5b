"""Sandbox lifecycle on this host: pause, resume, destroy, and clean-up at agent start and stop.

Create, session start, pause, resume, kill and destroy of one sandbox take that sandbox's lock,
so a pause never races a process being spawned into the sandbox's cgroup, and the freezer's work
in threads (see `hostagent.blocking`) is over before the next operation on the sandbox begins.

The paused state is kept in the sandbox directory, with the limits and the network policy the
sandbox was created with. The agent kills every process when it stops (and kills leftovers of a
crashed run when it starts), then starts each sandbox's environment again (a reboot: files kept,
processes gone), so after a restart a paused sandbox is still reported "paused", with no
sessions, and refuses new sessions until ResumeSandbox: the control plane, which owns the state
machine, sees the state it last asked for. An environment whose init has died (its root killed
it from inside) is started again before the next session, never left half-alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hostagent import disks
from hostagent.blocking import run_blocking
from hostagent.errors import AgentError, FailedPrecondition, validate_sandbox_id
from hostagent.freezer import Freezer
from hostagent.processes import ProcessRegistry, ProcessSession
from hostagent.registry import SessionRegistry
from hostagent.runtime import Limits, Runtime
from hostagent.sandboxes import SandboxStore
from hostagent.sessions import PtySession
from hostagent.usage import Readings

log = logging.getLogger(__name__)

RUNNING = "running"
PAUSED = "paused"
POLICY_FILE = "network.json"


@dataclass(frozen=True)
class SandboxStatus:
    sandbox_id: str
    state: str
    pty_sessions: int
    oom_kills: int = 0
    # Tags of the live sessions, so that the control plane can close its rows of the others.
    pty_tags: tuple[str, ...] = ()
    readings: Readings = field(default_factory=Readings)


def save_policy(root: Path, policy: dict[str, Any] | None) -> None:
    """Keep the sandbox's network policy beside it (blocking); None: the default policy."""
    path = root / POLICY_FILE
    if policy is None:
        path.unlink(missing_ok=True)
    else:
        path.write_text(json.dumps(policy))
        path.chmod(0o600)


def load_policy(root: Path) -> dict[str, Any] | None:
    try:
        policy = json.loads((root / POLICY_FILE).read_text())
    except (OSError, ValueError):
        return None
    return policy if isinstance(policy, dict) else None


class Lifecycle:
    def __init__(
        self,
        store: SandboxStore,
        registry: SessionRegistry,
        freezer: Freezer,
        runtime: Runtime,
        processes: ProcessRegistry | None = None,
    ) -> None:
        self.store = store
        self.registry = registry
        self.processes = processes or ProcessRegistry()
        self.freezer = freezer
        self.runtime = runtime
        self._locks: dict[str, asyncio.Lock] = {}
        self._oom_kills: dict[str, int] = {}
        self._readings: dict[str, Readings] = {}

    def leaders(self, sandbox_id: str) -> list[int]:
        """Host pids of the sandbox's running terminal sessions and processes (session leaders)."""
        return [*self.registry.live_pids(sandbox_id), *self.processes.live_pids(sandbox_id)]

    def _lock(self, sandbox_id: str) -> asyncio.Lock:
        return self._locks.setdefault(sandbox_id, asyncio.Lock())

    def state(self, sandbox_id: str) -> str:
        return PAUSED if self.store.paused(sandbox_id) else RUNNING

    def status(self, sandbox_id: str) -> SandboxStatus:
        tags = tuple(self.registry.live_tags(sandbox_id))
        return SandboxStatus(
            sandbox_id,
            self.state(sandbox_id),
            len(tags),
            self._oom_kills.get(sandbox_id, 0),
            tags,
            self._readings.get(sandbox_id, Readings()),
        )

    async def refresh_oom_kills(self) -> None:
        """Read each sandbox's OOM kill count from its cgroup (in a thread), for `status`."""
        ids = self.store.ids()
        counts = await run_blocking(lambda: {i: self.runtime.oom_kills(i) for i in ids})
        self._oom_kills = counts

    async def refresh_reports(self) -> None:
        """Read what each sandbox's heartbeat entry reports (in a thread): its OOM kills and its
        resource readings."""
        ids = self.store.ids()
        await self.refresh_oom_kills()
        self._readings = await run_blocking(lambda: {i: self._read(i) for i in ids})

    def _read(self, sandbox_id: str) -> Readings:
        cpu, memory = self.runtime.cpu_and_memory(sandbox_id)
        # The store's root, not store.path(): a sandbox destroyed since ids() reads as nothing.
        return Readings(cpu, memory, disks.allocated_bytes(self.store.root / sandbox_id))

    def statuses(self) -> list[SandboxStatus]:
        return [self.status(sandbox_id) for sandbox_id in self.store.ids()]

    def check_startable(self, sandbox_id: str) -> None:
        self.store.path(sandbox_id)
        if self.store.paused(sandbox_id):
            raise FailedPrecondition(f"sandbox {sandbox_id} is paused")

    async def create(
        self, sandbox_id: str, limits: Limits | None = None, policy: dict[str, Any] | None = None
    ) -> SandboxStatus:
        """Create the sandbox and start its environment, or return the existing one.

        Waits for a destroy of the same id. A sandbox whose environment cannot start is removed
        again, so a retry starts from nothing.
        """
        validate_sandbox_id(sandbox_id)
        async with self._lock(sandbox_id):
            if sandbox_id in self.store.ids():
                return self.status(sandbox_id)
            root = await self.store.create(sandbox_id)
            try:
                if limits is not None:
                    await run_blocking(self.runtime.save_limits, root, limits)
                await run_blocking(save_policy, root, policy)
                await self.runtime.start_environment(sandbox_id, root, policy, paused=False)
            except BaseException:
                path = self.store.forget(sandbox_id)
                await self.runtime.stop_environment(sandbox_id, path)
                await self.store.delete(await self.store.trash(path))
                raise
            return self.status(sandbox_id)

    async def set_policy(self, sandbox_id: str, policy: dict[str, Any] | None) -> None:
        """Replace the sandbox's network policy; its running environment follows at once."""
        async with self._lock(sandbox_id):
            root = self.store.path(sandbox_id)
            await run_blocking(save_policy, root, policy)
            await self.runtime.set_policy(sandbox_id, policy)

    @contextlib.asynccontextmanager
    async def starting(self, sandbox_id: str) -> AsyncIterator[str | None]:
        """Hold the sandbox while a session is spawned; yields the cgroup.procs file to join."""
        self.store.path(sandbox_id)
        async with self._lock(sandbox_id):
            self.check_startable(sandbox_id)  # destroyed or paused while we waited
            if not await run_blocking(self.runtime.alive, sandbox_id):
                await self._restart(sandbox_id)
            try:
                join = await run_blocking(self.freezer.join_path, sandbox_id)
            except OSError as exc:
                raise AgentError(f"cannot create the cgroup of sandbox {sandbox_id}: {exc}") from exc
            yield join

    async def _restart(self, sandbox_id: str) -> None:
        root = self.store.path(sandbox_id)
        log.warning(
            "sandbox %s: its environment is not running (its init exited, or it could not start "
            "at the agent's start); starting it again, its processes are gone",
            sandbox_id,
        )
        await self._kill_everything(sandbox_id, root)
        policy = await run_blocking(load_policy, root)
        await self.runtime.start_environment(sandbox_id, root, policy, self.store.paused(sandbox_id))

    async def pause(self, sandbox_id: str) -> SandboxStatus:
        async with self._lock(sandbox_id):
            self.store.path(sandbox_id)
            if not self.store.paused(sandbox_id):
                leaders = self.leaders(sandbox_id)
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
                    await self.freezer.thaw(sandbox_id, self.leaders(sandbox_id))
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

    async def signal_process(self, session: ProcessSession, signum: int) -> list[int]:
        """Signal a started process's session; returns the host pids signalled."""
        if session.exit_code is not None:
            return []
        async with self._lock(session.sandbox_id):
            pids = await session.signal(signum)
            if signum == signal.SIGKILL and self.store.paused(session.sandbox_id):
                await self.freezer.release(session.sandbox_id, pids)
            return pids

    async def signal_pid(self, sandbox_id: str, host_pid: int, signum: int) -> None:
        """Signal one process of the sandbox (the caller found it there)."""
        async with self._lock(sandbox_id):
            with contextlib.suppress(ProcessLookupError):
                os.kill(host_pid, signum)
            if signum == signal.SIGKILL and self.store.paused(sandbox_id):
                await self.freezer.release(sandbox_id, [host_pid])

    async def destroy(self, sandbox_id: str) -> None:
        self.store.path(sandbox_id)
        async with self._lock(sandbox_id):
            path = self.store.forget(sandbox_id)
            await self._kill_everything(sandbox_id, path)
            # Aside before the lock goes: a create waiting for it makes a fresh directory.
            trash = await self.store.trash(path)
            self._locks.pop(sandbox_id, None)
        await self.store.delete(trash)
        log.info("destroyed sandbox %s", sandbox_id)

    async def _kill_everything(self, sandbox_id: str, root: Path) -> int:
        for session in self.registry.sessions(sandbox_id):
            if session.running and session.recorder is not None:
                session.recorder.mark("kill: the capsule or the agent is stopping")
        # Killed, then thawed (a cgroup-v1-frozen process dies only once thawed), then reaped.
        killed = await self.freezer.kill_all(sandbox_id, self.leaders(sandbox_id))
        await self.registry.close_sandbox(sandbox_id)
        await self.processes.close_sandbox(sandbox_id)
        await self.freezer.remove(sandbox_id)
        await self.runtime.stop_environment(sandbox_id, root)
        return killed

    async def recover(self) -> None:
        """At start: kill what a crashed run left in the sandboxes, start their environments."""
        await self.runtime.recover()
        for sandbox_id in self.store.ids():
            root = self.store.path(sandbox_id)
            killed = await self._kill_everything(sandbox_id, root)
            if killed:
                log.warning(
                    "killed %d processes left over in sandbox %s by an earlier run", killed, sandbox_id
                )
            policy = await run_blocking(load_policy, root)
            try:
                await self.runtime.start_environment(
                    sandbox_id, root, policy, paused=self.store.paused(sandbox_id)
                )
            except AgentError as error:
                # Tried again at its next session start, whose caller then sees the reason.
                log.error("sandbox %s could not be started again: %s", sandbox_id, error.message)

    async def shutdown(self) -> None:
        """Kill every process of every sandbox; paused ones stay marked paused."""
        await asyncio.gather(*(self._kill_everything(i, self.store.path(i)) for i in self.store.ids()))
        await self.registry.close_all()
        await self.processes.close_all()
        await run_blocking(self.freezer.close)
        await run_blocking(self.runtime.close)
