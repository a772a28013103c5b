"""The gRPC servicer of the host agent and `serve()`, which runs it until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc

from hostagent.auth import TokenInterceptor
from hostagent.errors import AgentError, InvalidArgument
from hostagent.registry import SessionRegistry
from hostagent.runtime import LaunchRequest, Runtime, choose_runtime, validate_request
from hostagent.sandboxes import SandboxStore
from hostagent.sessions import Exited, PtySession, Subscriber
from protos import hostagent_pb2 as pb
from protos import hostagent_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

TAG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
DEFAULT_COLS = 80
DEFAULT_ROWS = 24
MAX_SIZE = 1000
STOP_GRACE = 5.0

Context = grpc.aio.ServicerContext[Any, Any]


def validate_tag(tag: str) -> str:
    if not tag:
        raise InvalidArgument("tag is required")
    if not TAG_RE.match(tag):
        raise InvalidArgument(f"invalid tag {tag!r}: use up to 128 letters, digits, '.', '_' or '-'")
    return tag


def validate_size(cols: int, rows: int) -> None:
    if not (1 <= cols <= MAX_SIZE and 1 <= rows <= MAX_SIZE):
        raise InvalidArgument(f"cols and rows must be between 1 and {MAX_SIZE}, got {cols}x{rows}")


async def _abort(context: Context, error: AgentError) -> None:
    await context.abort(error.code, error.message)


class HostAgentServicer(pb_grpc.HostAgentServicer):
    def __init__(self, store: SandboxStore, registry: SessionRegistry, runtime: Runtime) -> None:
        self.store = store
        self.registry = registry
        self.runtime = runtime

    def _sandbox_message(self, sandbox_id: str) -> pb.Sandbox:
        return pb.Sandbox(
            sandbox_id=sandbox_id,
            runtime=self.runtime.name,
            pty_sessions=self.registry.live_count(sandbox_id),
        )

    def _session(self, sandbox_id: str, tag: str) -> PtySession:
        self.store.path(sandbox_id)
        return self.registry.get(sandbox_id, validate_tag(tag))

    # Sandboxes

    async def CreateSandbox(
        self, request: pb.CreateSandboxRequest, context: Context
    ) -> pb.CreateSandboxResponse:
        try:
            self.store.create(request.sandbox_id)
        except AgentError as error:
            await _abort(context, error)
        return pb.CreateSandboxResponse(sandbox=self._sandbox_message(request.sandbox_id))

    async def DestroySandbox(
        self, request: pb.DestroySandboxRequest, context: Context
    ) -> pb.DestroySandboxResponse:
        try:
            path = self.store.forget(request.sandbox_id)
        except AgentError as error:
            await _abort(context, error)
        await self.registry.close_sandbox(request.sandbox_id)
        await self.store.delete_directory(path)
        log.info("destroyed sandbox %s", request.sandbox_id)
        return pb.DestroySandboxResponse()

    async def ListSandboxes(
        self, request: pb.ListSandboxesRequest, context: Context
    ) -> pb.ListSandboxesResponse:
        return pb.ListSandboxesResponse(sandboxes=[self._sandbox_message(i) for i in self.store.ids()])

    # Terminals

    async def PtyAttach(
        self, request: pb.PtyAttachRequest, context: Context
    ) -> AsyncIterator[pb.PtyAttachResponse]:
        try:
            root = self.store.path(request.sandbox_id)
            validate_tag(request.tag)
            if request.cmd:
                session, subscriber = await self._start(root, request)
            else:
                session = self.registry.get(request.sandbox_id, request.tag)
                subscriber = session.subscribe()
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
                yield pb.PtyAttachResponse(output=pb.PtyOutput(data=event.data, offset=event.offset))
        finally:
            # The session outlives the stream: only this subscriber goes away.
            session.unsubscribe(subscriber)

    async def _start(self, root: Path, request: pb.PtyAttachRequest) -> tuple[PtySession, Subscriber]:
        cols = request.cols or DEFAULT_COLS
        rows = request.rows or DEFAULT_ROWS
        validate_size(cols, rows)
        launch = LaunchRequest(
            cmd=request.cmd,
            args=list(request.args),
            envs=dict(request.envs),
            cwd=request.cwd,
            user=request.user,
        )
        validate_request(launch)
        spec = self.runtime.launch_spec(request.sandbox_id, root, launch)
        return await self.registry.start(request.sandbox_id, request.tag, spec, cols, rows)

    async def PtySendInput(
        self, request: pb.PtySendInputRequest, context: Context
    ) -> pb.PtySendInputResponse:
        try:
            await self._session(request.sandbox_id, request.tag).write(request.data)
        except AgentError as error:
            await _abort(context, error)
        return pb.PtySendInputResponse()

    async def PtyResize(self, request: pb.PtyResizeRequest, context: Context) -> pb.PtyResizeResponse:
        try:
            validate_size(request.cols, request.rows)
            self._session(request.sandbox_id, request.tag).resize(request.cols, request.rows)
        except AgentError as error:
            await _abort(context, error)
        return pb.PtyResizeResponse()

    async def PtyKill(self, request: pb.PtyKillRequest, context: Context) -> pb.PtyKillResponse:
        try:
            self._session(request.sandbox_id, request.tag).kill()
        except AgentError as error:
            await _abort(context, error)
        return pb.PtyKillResponse()


async def serve(
    listen: str, data_dir: Path, runtime_name: str, sandbox_uid: int, token: str | None = None
) -> None:
    """Serve until SIGTERM or SIGINT, then kill every PTY session and stop gracefully."""
    data_dir.mkdir(parents=True, exist_ok=True)
    runtime = choose_runtime(runtime_name, data_dir, sandbox_uid)
    store = SandboxStore(data_dir, runtime)
    registry = SessionRegistry()
    # Without SO_REUSEPORT a second agent on the same address fails instead of sharing the port.
    if not token:
        log.warning(
            "no HOSTAGENT_TOKEN: any local process, a capsule's included, can call this agent; "
            "set the same token here and as WRENN_HOSTAGENT_TOKEN in the control plane"
        )
    interceptors = [TokenInterceptor(token)] if token else []
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)], interceptors=interceptors)
    pb_grpc.add_HostAgentServicer_to_server(HostAgentServicer(store, registry, runtime), server)
    if server.add_insecure_port(listen) == 0:
        raise RuntimeError(f"cannot listen on {listen}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await server.start()
        log.info("hostagent listening on %s (runtime=%s)", listen, runtime.name)
        await stop.wait()
        log.info("stopping")
    finally:
        # Kill the sessions first: their streams then end with `exited` instead of blocking
        # the graceful stop until the grace period runs out.
        await registry.close_all()
        await server.stop(STOP_GRACE)
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(signum)
