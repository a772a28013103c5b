"""The agent's process RPCs (exec): start, attach, list and signal processes run with pipes.

A mixin of the servicer (hostagent/server.py), which gives it the sandbox store, the lifecycle
and the runtime. Processes start inside the capsule's environment as its terminals do, as the
capsule's root in root's home unless the request names a user or a directory.
"""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc

from hostagent.blocking import run_blocking
from hostagent.errors import AgentError, FailedPrecondition, InvalidArgument, NotFound, validate_tag
from hostagent.lifecycle import Lifecycle
from hostagent.processes import Chunk, Ended, Listener, ProcessOrigin, ProcessSession
from hostagent.procs import ProcessView, describe_processes, namespace_pid
from hostagent.runtime import EnvironmentStopped, LaunchRequest, Runtime, validate_request
from hostagent.sandboxes import SandboxStore
from hostagent.spawn import Piped
from hostagent.subscribers import Missed
from protos import hostagent_pb2 as pb

Context = grpc.aio.ServicerContext[Any, Any]

MAX_OWNER = 256
# Ten days: longer than any foreground call should wait, short enough to stay a sane timer.
MAX_TIMEOUT_MS = 10 * 24 * 3600 * 1000
MAX_SIGNAL = 64


def event_message(event: Chunk | Missed | Ended) -> pb.ProcessEvent:
    if isinstance(event, Chunk):
        stream = pb.STDERR if event.stream else pb.STDOUT
        return pb.ProcessEvent(output=pb.ProcessOutput(stream=stream, data=event.data, offset=event.offset))
    if isinstance(event, Missed):
        return pb.ProcessEvent(missed=pb.PtyMissed(offset=event.offset, bytes=event.bytes))
    return pb.ProcessEvent(exited=pb.ProcessExited(exit_code=event.exit_code, timed_out=event.timed_out))


async def _abort(context: Context, error: AgentError) -> None:
    await context.abort(error.code, error.message)


class ProcessServicer:
    store: SandboxStore
    runtime: Runtime
    lifecycle: Lifecycle

    # Start

    async def ProcessStart(
        self, request: pb.ProcessStartRequest, context: Context
    ) -> AsyncIterator[pb.ProcessEvent]:
        try:
            root = self.store.path(request.sandbox_id)
            session, listener = await self._start_process(root, request)
        except AgentError as error:
            await _abort(context, error)
            return
        yield pb.ProcessEvent(started=pb.ProcessStarted(tag=session.tag, pid=session.visible_pid))
        if listener is None:
            return
        done = False
        try:
            async for message in _relay(listener):
                yield message
            done = True
        finally:
            session.unlisten(listener)
            if not done:
                # A foreground process belongs to its caller: gone before the exit, it is killed.
                await self.lifecycle.signal_process(session, signal.SIGKILL)

    async def _start_process(
        self, root: Path, request: pb.ProcessStartRequest
    ) -> tuple[ProcessSession, Listener | None]:
        self.lifecycle.check_startable(request.sandbox_id)
        validate_tag(request.tag)
        if not request.cmd:
            raise InvalidArgument("cmd is required")
        if len(request.owner) > MAX_OWNER:
            raise InvalidArgument(f"owner must be at most {MAX_OWNER} characters")
        if request.timeout_ms > MAX_TIMEOUT_MS:
            raise InvalidArgument(f"timeout_ms must be at most {MAX_TIMEOUT_MS}")
        launch = LaunchRequest(
            cmd=request.cmd,
            args=list(request.args),
            envs=dict(request.envs),
            cwd=request.cwd,
            user=request.user or self.runtime.exec_user,
            terminal=False,
        )
        validate_request(launch)
        origin = ProcessOrigin(cmd=request.cmd, args=tuple(request.args), owner=request.owner)
        try:
            return await self._spawn_process(root, request, launch, origin)
        except EnvironmentStopped:
            # Its init exited just now: `starting` sees it this time and starts it again.
            return await self._spawn_process(root, request, launch, origin)

    async def _spawn_process(
        self, root: Path, request: pb.ProcessStartRequest, launch: LaunchRequest, origin: ProcessOrigin
    ) -> tuple[ProcessSession, Listener | None]:
        sandbox_id = request.sandbox_id
        async with self.lifecycle.starting(sandbox_id) as cgroup_procs:
            return await self.lifecycle.processes.start(
                sandbox_id,
                request.tag,
                lambda: self._spawn_piped(sandbox_id, root, launch, cgroup_procs),
                self._visible_pid,
                origin,
                request.timeout_ms / 1000,
                listen=not request.background,
            )

    async def _spawn_piped(
        self, sandbox_id: str, root: Path, launch: LaunchRequest, cgroup_procs: str | None
    ) -> Piped:
        try:
            return await self.runtime.spawn_piped(sandbox_id, root, launch, cgroup_procs)
        except EnvironmentStopped:
            raise
        except FailedPrecondition as exc:
            # A command or directory the capsule does not have: the request's fault, not the state.
            raise InvalidArgument(exc.message) from exc

    def _visible_pid(self, host_pid: int) -> int:
        if not self.runtime.own_pid_namespace:
            return host_pid
        return namespace_pid(host_pid) or host_pid

    # Attach

    def _find(self, sandbox_id: str, tag: str, pid: int) -> ProcessSession:
        self.store.path(sandbox_id)
        if tag:
            return self.lifecycle.processes.get(sandbox_id, validate_tag(tag))
        if not pid:
            raise InvalidArgument("name the process by tag or by pid")
        session = self.lifecycle.processes.by_pid(sandbox_id, pid)
        if session is None:
            raise NotFound(f"no process with pid {pid} was started by the API in this sandbox")
        return session

    async def ProcessAttach(
        self, request: pb.ProcessAttachRequest, context: Context
    ) -> AsyncIterator[pb.ProcessEvent]:
        try:
            session = self._find(request.sandbox_id, request.tag, request.pid)
            listener = session.listen(request.from_offset if request.resume else None)
        except AgentError as error:
            await _abort(context, error)
            return
        try:
            # First the process it found (a selector by pid names its tag here, and the reverse);
            # from then on the caller receives every byte written.
            yield pb.ProcessEvent(started=pb.ProcessStarted(tag=session.tag, pid=session.visible_pid))
            async for message in _relay(listener):
                yield message
        finally:
            session.unlisten(listener)

    # List and signal

    async def _capsule_processes(self, sandbox_id: str) -> list[ProcessView]:
        leaders = self.lifecycle.leaders(sandbox_id)
        inner = self.runtime.own_pid_namespace

        def scan() -> list[ProcessView]:
            return describe_processes(self.runtime.capsule_pids(sandbox_id, leaders), inner)

        return await run_blocking(scan)

    async def ListProcesses(
        self, request: pb.ListProcessesRequest, context: Context
    ) -> pb.ListProcessesResponse:
        try:
            self.store.path(request.sandbox_id)
        except AgentError as error:
            await _abort(context, error)
        started = {s.pid: s for s in self.lifecycle.processes.processes(request.sandbox_id) if s.running}
        processes = []
        for view in await self._capsule_processes(request.sandbox_id):
            session = started.get(view.host_pid)
            processes.append(
                pb.ProcessInfo(
                    pid=view.pid,
                    ppid=view.ppid,
                    tag=session.tag if session else "",
                    cmd=session.origin.cmd if session else (view.argv[0] if view.argv else ""),
                    args=list(session.origin.args) if session else view.argv[1:],
                    state=view.state,
                    owner=session.origin.owner if session else "",
                )
            )
        return pb.ListProcessesResponse(processes=processes)

    async def SignalProcess(
        self, request: pb.SignalProcessRequest, context: Context
    ) -> pb.SignalProcessResponse:
        signum = request.signal or int(signal.SIGKILL)
        try:
            if not 1 <= signum <= MAX_SIGNAL:
                raise InvalidArgument(f"signal must be between 1 and {MAX_SIGNAL}, got {signum}")
            session = None
            if request.tag:
                session = self._find(request.sandbox_id, request.tag, 0)
            elif request.pid:
                self.store.path(request.sandbox_id)
                session = self.lifecycle.processes.by_pid(request.sandbox_id, request.pid)
                if session is not None and not session.running:
                    session = None
            else:
                raise InvalidArgument("name the process by tag or by pid")
            if session is not None:
                if not session.running:
                    raise NotFound(f"process {session.tag} has exited")
                await self.lifecycle.signal_process(session, signum)
                return pb.SignalProcessResponse(pids=[session.visible_pid])
            views = await self._capsule_processes(request.sandbox_id)
            view = next((v for v in views if v.pid == request.pid), None)
            if view is None:
                raise NotFound(f"no process with pid {request.pid} in this sandbox")
            await self.lifecycle.signal_pid(request.sandbox_id, view.host_pid, signum)
            return pb.SignalProcessResponse(pids=[view.pid])
        except AgentError as error:
            await _abort(context, error)
            raise


async def _relay(listener: Listener) -> AsyncIterator[pb.ProcessEvent]:
    """The listener's events as messages, up to and including the exit."""
    while True:
        event = await listener.get()
        yield event_message(event)
        if isinstance(event, Ended):
            return
