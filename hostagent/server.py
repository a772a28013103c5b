"""The gRPC servicer of the host agent and `serve()`, which runs it until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc

from hostagent.auth import TokenInterceptor
from hostagent.blocking import run_blocking
from hostagent.config import AgentConfig
from hostagent.egress import Policy
from hostagent.errors import AgentError, InvalidArgument, validate_tag
from hostagent.file_service import FileServicer
from hostagent.files import Files
from hostagent.freezer import choose_freezer
from hostagent.heartbeat import Heartbeat
from hostagent.lifecycle import Lifecycle, SandboxStatus
from hostagent.ports import REFUSED_KEY, PortUnavailable, open_port, relay, validate_port
from hostagent.process_service import ProcessServicer
from hostagent.processes import ProcessRegistry
from hostagent.recorder import MAX_LABEL, Recorder, RecordingOptions
from hostagent.recordings import HttpSink, Recordings
from hostagent.registry import SessionRegistry
from hostagent.runtime import EnvironmentStopped, LaunchRequest, Runtime, validate_request
from hostagent.runtimes import choose_runtime
from hostagent.sandboxes import SandboxStore
from hostagent.sessions import Origin, PtySession
from hostagent.subscribers import Exited, Missed, Subscriber
from protos import hostagent_pb2 as pb
from protos import hostagent_pb2_grpc as pb_grpc
from protos import rules

log = logging.getLogger(__name__)

MAX_OWNER = 256
STOP_GRACE = 5.0
READ_DEFAULT = 64 * 1024
READ_MAX = 1024 * 1024
SERVER_OPTIONS = [
    # Without SO_REUSEPORT a second agent on the same address fails instead of sharing the port.
    ("grpc.so_reuseport", 0),
    # The control plane pings its long-lived terminal streams (every 30 s); gRPC's default policy
    # takes pings without data more often than every 5 minutes as abuse and answers GOAWAY
    # "too_many_pings", which ended every terminal idle for about three minutes. Pings are cheap
    # and only the control plane reaches this port: take them all.
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 1000),
    ("grpc.http2.max_ping_strikes", 0),
    # A fixed receive window (64 KiB) rather than one grown by bandwidth probing: a file upload's
    # stream would otherwise let the control plane run megabytes ahead of the capsule's disk,
    # held in the agent's memory (the control plane's channels do the same for their side).
    ("grpc.http2.bdp_probe", 0),
]

Context = grpc.aio.ServicerContext[Any, Any]


def validate_size(cols: int, rows: int) -> None:
    if not rules.is_window_size(cols, rows):
        raise InvalidArgument(f"cols and rows must be between 1 and {rules.MAX_WINDOW}, got {cols}x{rows}")


async def _abort(context: Context, error: AgentError) -> None:
    await context.abort(error.code, error.message)


def session_info(session: PtySession) -> pb.PtySessionInfo:
    return pb.PtySessionInfo(
        sandbox_id=session.sandbox_id,
        tag=session.tag,
        pid=session.pid,
        cmd=session.origin.cmd,
        args=list(session.origin.args),
        owner=session.origin.owner,
        streams=session.streams,
        bytes_in=session.bytes_in,
        bytes_out=session.offset,
        exited=session.exit_code is not None,
        exit_code=session.exit_code or 0,
        started_at_ms=session.started_at_ms,
    )


def policy_of(request: pb.CreateSandboxRequest | pb.SetNetworkPolicyRequest) -> dict[str, Any] | None:
    """The request's network policy, checked (InvalidArgument), as kept beside the sandbox;
    None when the request leaves it unset (the default policy)."""
    if not request.HasField("network"):
        return None
    return Policy.from_request(request).to_json()


MAINTAIN_EVERY = 5.0


class HostAgentServicer(ProcessServicer, FileServicer, pb_grpc.HostAgentServicer):
    def __init__(
        self,
        store: SandboxStore,
        registry: SessionRegistry,
        runtime: Runtime,
        lifecycle: Lifecycle,
        recordings: Recordings | None = None,
    ) -> None:
        self.store = store
        self.registry = registry
        self.runtime = runtime
        self.lifecycle = lifecycle
        self.recordings = recordings or Recordings(None)
        self.files = Files(store, lifecycle, runtime)

    def _status_message(self, status: SandboxStatus) -> pb.Sandbox:
        return pb.Sandbox(
            sandbox_id=status.sandbox_id,
            runtime=self.runtime.name,
            pty_sessions=status.pty_sessions,
            state=status.state,
            oom_kills=status.oom_kills,
        )

    def _session(self, sandbox_id: str, tag: str) -> PtySession:
        self.store.path(sandbox_id)
        return self.registry.get(sandbox_id, validate_tag(tag))

    # Sandboxes

    async def CreateSandbox(
        self, request: pb.CreateSandboxRequest, context: Context
    ) -> pb.CreateSandboxResponse:
        try:
            limits = self.runtime.limits_for(request.vcpus, request.memory_mb, request.disk_size_mb)
            status = await self.lifecycle.create(request.sandbox_id, limits, policy_of(request))
        except AgentError as error:
            await _abort(context, error)
        return pb.CreateSandboxResponse(sandbox=self._status_message(status))

    async def SetNetworkPolicy(
        self, request: pb.SetNetworkPolicyRequest, context: Context
    ) -> pb.SetNetworkPolicyResponse:
        try:
            await self.lifecycle.set_policy(request.sandbox_id, policy_of(request))
        except AgentError as error:
            await _abort(context, error)
        return pb.SetNetworkPolicyResponse()

    async def DestroySandbox(
        self, request: pb.DestroySandboxRequest, context: Context
    ) -> pb.DestroySandboxResponse:
        try:
            await self.lifecycle.destroy(request.sandbox_id)
        except AgentError as error:
            await _abort(context, error)
        return pb.DestroySandboxResponse()

    async def ListSandboxes(
        self, request: pb.ListSandboxesRequest, context: Context
    ) -> pb.ListSandboxesResponse:
        await self.lifecycle.refresh_oom_kills()
        return pb.ListSandboxesResponse(
            sandboxes=[self._status_message(s) for s in self.lifecycle.statuses()]
        )

    async def PauseSandbox(
        self, request: pb.PauseSandboxRequest, context: Context
    ) -> pb.PauseSandboxResponse:
        try:
            status = await self.lifecycle.pause(request.sandbox_id)
        except AgentError as error:
            await _abort(context, error)
        return pb.PauseSandboxResponse(sandbox=self._status_message(status))

    async def ResumeSandbox(
        self, request: pb.ResumeSandboxRequest, context: Context
    ) -> pb.ResumeSandboxResponse:
        try:
            status = await self.lifecycle.resume(request.sandbox_id)
        except AgentError as error:
            await _abort(context, error)
        return pb.ResumeSandboxResponse(sandbox=self._status_message(status))

    # Terminals

    async def PtyAttach(
        self, request: pb.PtyAttachRequest, context: Context
    ) -> AsyncIterator[pb.PtyAttachResponse]:
        try:
            root = self.store.path(request.sandbox_id)
            validate_tag(request.tag)
            if request.cmd:
                if request.resume:
                    raise InvalidArgument("resume applies to attaching, not to starting (cmd)")
                session, subscriber = await self._start(root, request)
            else:
                session = self.registry.get(request.sandbox_id, request.tag)
                resume_from = request.from_offset if request.resume else None
                subscriber = session.subscribe(resume_from)
        except AgentError as error:
            await _abort(context, error)
            return
        try:
            if request.cmd:
                yield pb.PtyAttachResponse(started=pb.PtyStarted(tag=session.tag, pid=session.pid))
            else:
                # Headers tell an attaching client that it now receives every byte written.
                await context.send_initial_metadata(())
            while True:
                event = await subscriber.get()
                if isinstance(event, Exited):
                    yield pb.PtyAttachResponse(exited=pb.PtyExited(exit_code=event.exit_code))
                    return
                if isinstance(event, Missed):
                    yield pb.PtyAttachResponse(missed=pb.PtyMissed(offset=event.offset, bytes=event.bytes))
                    continue
                yield pb.PtyAttachResponse(output=pb.PtyOutput(data=event.data, offset=event.offset))
        finally:
            # The session outlives the stream: only this subscriber goes away.
            session.unsubscribe(subscriber)

    async def _start(self, root: Path, request: pb.PtyAttachRequest) -> tuple[PtySession, Subscriber]:
        self.lifecycle.check_startable(request.sandbox_id)
        cols = request.cols or rules.DEFAULT_COLS
        rows = request.rows or rules.DEFAULT_ROWS
        validate_size(cols, rows)
        if len(request.owner) > MAX_OWNER:
            raise InvalidArgument(f"owner must be at most {MAX_OWNER} characters")
        launch = LaunchRequest(
            cmd=request.cmd,
            args=list(request.args),
            envs=dict(request.envs),
            cwd=request.cwd,
            user=request.user,
        )
        validate_request(launch)
        origin = Origin(cmd=request.cmd, args=tuple(request.args), owner=request.owner)
        recorder = self._recorder(request, cols, rows)
        try:
            started = await self._spawn(root, request, launch, cols, rows, origin, recorder)
        except EnvironmentStopped:
            # Its init exited just now (killed from inside): `starting` sees it this time and
            # starts the environment again; a second failure is the caller's.
            started = await self._spawn(root, request, launch, cols, rows, origin, recorder)
        if recorder is not None:
            self.recordings.push(request.sandbox_id, request.tag, recorder)
        return started

    def _recorder(self, request: pb.PtyAttachRequest, cols: int, rows: int) -> Recorder | None:
        recording = request.recording
        if recording.max_bytes < 0:
            raise InvalidArgument("recording.max_bytes must be 0 (no cap) or more")
        if len(recording.title) > MAX_LABEL:
            raise InvalidArgument(f"recording.title must be at most {MAX_LABEL} characters")
        options = RecordingOptions(
            input=recording.input, max_bytes=recording.max_bytes, title=recording.title
        )
        command = " ".join([request.cmd, *request.args])
        return self.recordings.recorder(recording.enabled, options, cols, rows, command)

    async def _spawn(
        self,
        root: Path,
        request: pb.PtyAttachRequest,
        launch: LaunchRequest,
        cols: int,
        rows: int,
        origin: Origin,
        recorder: Recorder | None,
    ) -> tuple[PtySession, Subscriber]:
        async with self.lifecycle.starting(request.sandbox_id) as cgroup_procs:
            return await self.registry.start(
                request.sandbox_id,
                request.tag,
                lambda: self.runtime.spawn(request.sandbox_id, root, launch, cols, rows, cgroup_procs),
                request.cmd,
                origin,
                recorder,
            )

    async def PtyKill(self, request: pb.PtyKillRequest, context: Context) -> pb.PtyKillResponse:
        try:
            await self.lifecycle.kill(self._session(request.sandbox_id, request.tag))
        except AgentError as error:
            await _abort(context, error)
        return pb.PtyKillResponse()

    async def PtyMark(self, request: pb.PtyMarkRequest, context: Context) -> pb.PtyMarkResponse:
        try:
            session = self._session(request.sandbox_id, request.tag)
            if not request.label or len(request.label) > MAX_LABEL:
                raise InvalidArgument(f"label must be 1 to {MAX_LABEL} characters")
        except AgentError as error:
            await _abort(context, error)
        recorded = session.recorder is not None and session.recorder.mark(request.label)
        return pb.PtyMarkResponse(recorded=recorded)

    async def PtyInput(
        self, requests: AsyncIterator[pb.PtyInputRequest], context: Context
    ) -> AsyncIterator[pb.PtyInputAck]:
        session: PtySession | None = None
        async for request in requests:
            if session is None:
                try:
                    session = self._session(request.sandbox_id, request.tag)
                except AgentError as error:
                    await _abort(context, error)
                    return
            op = request.WhichOneof("op")
            if op is None:
                continue
            try:
                # An ended session refuses input and resizes, and a kill of it does nothing (the
                # session object outlives its process, so the stream looks it up once rather than
                # on the hot path of every keystroke).
                if op == "data":
                    await session.write(request.data)
                elif op == "resize":
                    validate_size(request.resize.cols, request.resize.rows)
                    session.resize(request.resize.cols, request.resize.rows)
                else:
                    await self.lifecycle.kill(session)
            except AgentError as error:
                yield pb.PtyInputAck(code=error.code.value[0], message=error.message)
                continue
            yield pb.PtyInputAck()

    async def PtyRead(self, request: pb.PtyReadRequest, context: Context) -> pb.PtyReadResponse:
        try:
            session = self._session(request.sandbox_id, request.tag)
            max_bytes = min(request.max_bytes or READ_DEFAULT, READ_MAX)
            offset, data = session.read_output(request.offset, max_bytes, request.neutralize_queries)
        except AgentError as error:
            await _abort(context, error)
        return pb.PtyReadResponse(
            data=data,
            offset=offset,
            end_offset=session.offset,
            exited=session.exit_code is not None,
            exit_code=session.exit_code or 0,
        )

    async def ListPtySessions(
        self, request: pb.ListPtySessionsRequest, context: Context
    ) -> pb.ListPtySessionsResponse:
        try:
            if request.sandbox_id:
                self.store.path(request.sandbox_id)
        except AgentError as error:
            await _abort(context, error)
        sessions = self.registry.sessions(request.sandbox_id or None)
        return pb.ListPtySessionsResponse(sessions=[session_info(s) for s in sessions])

    # Previews

    # Written with context.write rather than as a generator, so that the two directions run as two
    # tasks; the generated stub types only the generator style.
    async def PortForward(  # type: ignore[override]
        self, requests: AsyncIterator[pb.PortForwardRequest], context: Context
    ) -> None:
        first = await anext(aiter(requests), None)
        if first is None:
            return  # the caller closed before naming a port: nothing to connect
        what = f"port {first.port} of capsule {first.sandbox_id}"
        try:
            validate_port(first.port)
            self.lifecycle.check_startable(first.sandbox_id)
            netns = await run_blocking(self.runtime.port_namespace, first.sandbox_id)
            reader, writer = await open_port(netns, first.sandbox_id, first.port)
        except PortUnavailable as error:
            await context.abort(error.code, error.message, trailing_metadata=((REFUSED_KEY, "1"),))
            return
        except AgentError as error:
            await _abort(context, error)
            return
        log.info("preview connection to %s", what)
        await context.write(pb.PortForwardResponse(connected=True))
        if first.data:
            writer.write(first.data)
        try:
            await relay(requests, context, reader, writer, what, write_closed=first.close_write)
        except PortUnavailable as error:
            await context.abort(error.code, error.message, trailing_metadata=((REFUSED_KEY, "1"),))


async def _maintain(runtime: Runtime) -> None:
    while True:
        await asyncio.sleep(MAINTAIN_EVERY)
        try:
            await runtime.maintain()
        except Exception:
            log.exception("runtime maintenance failed; trying again in %ss", MAINTAIN_EVERY)


async def serve(config: AgentConfig) -> None:
    """Serve until SIGTERM or SIGINT, then kill every process of every sandbox and stop gracefully."""
    config.data_dir.mkdir(parents=True, exist_ok=True)
    runtime = choose_runtime(
        config.runtime,
        config.data_dir,
        config.sandbox_uid,
        config.limits,
        config.cgroup_root,
        config.uid_base,
    )
    runtime.connect(config.network)
    freezer = runtime.own_freezer() or choose_freezer(config.pause_mechanism, config.cgroup_root)
    log.info("pause mechanism: %s", freezer.describe())
    store = SandboxStore(config.data_dir, runtime)
    registry = SessionRegistry(replay_limit=config.replay_buffer)
    processes = ProcessRegistry(replay_limit=config.process_buffer, max_live=config.max_processes)
    lifecycle = Lifecycle(store, registry, freezer, runtime, processes)
    recordings = Recordings(
        HttpSink(config.heartbeat) if config.heartbeat is not None else None, backlog=config.recording_backlog
    )
    servicer = HostAgentServicer(store, registry, runtime, lifecycle, recordings)
    if not config.token:
        log.warning(
            "no HOSTAGENT_TOKEN: any local process, a capsule's included, can call this agent; "
            "set the same token here and as WRENN_HOSTAGENT_TOKEN in the control plane"
        )
    interceptors = [TokenInterceptor(config.token)] if config.token else []
    server = grpc.aio.server(options=SERVER_OPTIONS, interceptors=interceptors)
    pb_grpc.add_HostAgentServicer_to_server(servicer, server)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    heartbeats: asyncio.Task[None] | None = None
    maintenance: asyncio.Task[None] | None = None
    # Bound before touching the sandboxes: a second agent started by mistake fails here and
    # leaves the first one's processes alone.
    try:
        if server.add_insecure_port(config.listen) == 0:
            raise RuntimeError(f"cannot listen on {config.listen}")
    except BaseException:
        freezer.close()
        raise
    try:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await lifecycle.recover()
        await server.start()
        log.info("hostagent listening on %s (runtime=%s)", config.listen, runtime.name)
        maintenance = asyncio.create_task(_maintain(runtime), name="maintenance")
        if config.heartbeat is not None:
            heartbeat = Heartbeat(
                config.heartbeat,
                runtime.name,
                lifecycle.statuses,
                runtime.isolation,
                lifecycle.refresh_reports,
            )
            heartbeats = asyncio.create_task(heartbeat.run(), name="heartbeats")
        await stop.wait()
        log.info("stopping")
    finally:
        if maintenance is not None:
            maintenance.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await maintenance
        if heartbeats is not None:
            heartbeats.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeats
        # Kill the sessions first: their streams then end with `exited` instead of blocking
        # the graceful stop until the grace period runs out.
        await lifecycle.shutdown()
        # The killed sessions' last chunks, before the agent goes.
        await recordings.close()
        await server.stop(STOP_GRACE)
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(signum)
