"""The terminal WebSocket: speaks the reference protocol to one client.

It authenticates the caller, checks the capsule, joins the session's group and
follows its output by offset: duplicates are dropped, gaps are filled from the
host agent's replay buffer. Whichever viewer holds the session's lease (on any
worker) runs the gRPC stream worker as a task it owns. Its own input goes to
the host agent through an ``InputPump``.

Each connection speaks one dialect (pty/dialects.py), stated or recognised from what the
client does; its output goes through an ``OutputCursor`` (pty/cursor.py), which
relays it at the client's pace with bounded memory, and through an
``Audience`` (pty/audience.py): the leader paces the stream to the viewers
that keep up, so a writing process blocks when they fall behind, as on a real
terminal, and publishes to the group only while someone else watches.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from capsules.actions import record_activity, record_terminal_exit, record_terminal_started, record_viewer
from capsules.agents import HOST_UNREACHABLE, aio_stub_for, describe, rpc_timeout
from capsules.services import find_capsule
from protos import hostagent_pb2 as pb
from protos import rules
from wrenn.flow import send_window

from . import dialects
from . import protocol as p
from .audience import Audience
from .auth import SCOPE_AUTH_ERROR, SCOPE_CALLER, AuthFailed, Caller, caller_from_token
from .catchup import Chunk, Ended, Missed, read_output
from .cursor import OutputCursor
from .dialects import Codec, DialectError
from .input import AgentStream, InputPump, Op, OpFailed
from .leadership import keep_leading
from .leases import lease_key, leases
from .stream import ERROR_EVENT, LeaderHooks, StreamFailed, group_name, lead

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Capsule:
    id: str
    status: str
    host_address: str | None


@database_sync_to_async
def _find_capsule(sandbox_id: str, caller: Caller, admin_route: bool) -> Capsule | None:
    if admin_route:
        sandbox = find_capsule(sandbox_id, any_team=True)
    elif caller.team_id is not None:
        sandbox = find_capsule(sandbox_id, team_id=caller.team_id)
    else:
        sandbox = find_capsule(sandbox_id, user=caller.user)
    if sandbox is None:
        return None
    return Capsule(sandbox.id, sandbox.status, sandbox.host.address if sandbox.host else None)


_record_activity = database_sync_to_async(record_activity)
_record_started = database_sync_to_async(record_terminal_started)
_record_viewer = database_sync_to_async(record_viewer)
_record_exit = database_sync_to_async(record_terminal_exit)


class PtyConsumer(AsyncWebsocketConsumer):
    # True on /v1/admin/capsules/<id>/pty: staff only, any team's capsule.
    admin = False

    async def connect(self) -> None:
        self.capsule: Capsule | None = None
        self.caller: Caller | None = None
        self.tag = ""
        self.group = ""
        self.phase = "auth"  # auth -> first -> attached -> closed
        self.cursor: OutputCursor | None = None  # once joined to a session
        self.audience: Audience | None = None  # once joined to a session
        self.last_touch = 0.0
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.pump: InputPump | None = None
        self.agent_stream: AgentStream | None = None  # once the first op goes out
        self.attached = asyncio.Event()
        self._request = pb.PtyAttachRequest()
        self.released = False
        # The client's dialect: stated in the handshake, else recognised later (None till then).
        self.codec: Codec | None = None
        try:
            choice = dialects.from_handshake(
                self.scope.get("subprotocols", []), self.scope.get("query_string", b"")
            )
        except DialectError as exc:
            await self.accept()
            await self.fatal(str(exc))
            return
        self.extensions = choice.extensions
        if choice.dialect is not None:
            self.codec = dialects.codec(choice.dialect, extensions=choice.extensions)
        await self.accept(choice.subprotocol)
        self._spawn("ping", self._keepalive())
        error = self.scope.get(SCOPE_AUTH_ERROR)
        caller = self.scope.get(SCOPE_CALLER)
        if error:
            await self.fatal(error)
        elif caller is None:
            self._spawn("auth_timeout", self._auth_deadline())
        else:
            await self._authorize(caller)

    async def dispatch(self, message: dict[str, Any]) -> None:
        """As Channels', without closing stale database connections before every message (a
        thread hop each, on the path of every keystroke and output message). The database is only
        reached through database_sync_to_async, which does that itself around each call."""
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    # --- client frames -----------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.phase == "closed":
            return
        if text_data is None:
            await self._receive_binary(bytes_data or b"")
            return
        if await self._too_big(len(text_data.encode("utf-8"))):
            return
        try:
            msg = p.parse(text_data)
        except p.ProtocolError as exc:
            await self._refuse(str(exc))
            return
        if self.codec is None and (shown := dialects.shown_by(msg.type)) is not None:
            self._choose(shown)
        if msg.type == p.PONG:
            return
        if self.phase == "auth":
            await self._on_auth(msg)
        elif self.phase == "first":
            await self._on_first(msg)
        elif self.phase == "attached":
            await self._on_attached(msg)

    async def _receive_binary(self, data: bytes) -> None:
        shown = dialects.shown_by(dialects.BINARY_FRAME)
        if self.codec is None and self.phase == "attached" and shown is not None:
            self._choose(shown)
        try:
            msg = self.codec.input(data) if self.codec is not None else p.Message(type=p.INPUT, data=data)
        except p.ProtocolError as exc:
            await self._refuse(str(exc))
            return
        if await self._too_big(len(data)):
            return
        if self.phase != "attached":
            await self.fatal("binary frames are input: start or connect to a session first")
        elif data:
            await self._on_attached(msg)

    async def _too_big(self, size: int) -> bool:
        """Refuses (fatally) a frame over the limit; whether it was."""
        if size <= p.MAX_FRAME_BYTES:
            return False
        await self.error(f"frame of {size} bytes exceeds the {p.MAX_FRAME_BYTES}-byte limit", fatal=True)
        await self._close(p.CLOSE_TOO_BIG, f"frame exceeds {p.MAX_FRAME_BYTES} bytes")
        return True

    async def _refuse(self, message: str) -> None:
        # Before a session is attached nothing can go on, so every error is fatal.
        if self.phase == "attached":
            await self.error(message)
        else:
            await self.fatal(message)

    async def _on_auth(self, msg: p.Message) -> None:
        if msg.type != p.AUTH:
            await self.fatal('authentication required: send {"type": "auth", "token": ...} first')
            return
        self._cancel("auth_timeout")
        try:
            caller = await caller_from_token(msg.token)
        except AuthFailed as exc:
            await self.fatal(str(exc))
            return
        await self._authorize(caller)

    async def _on_first(self, msg: p.Message) -> None:
        if msg.type == p.START and msg.start is not None:
            await self._start(msg.start)
        elif msg.type == p.CONNECT:
            await self._connect(msg.tag, msg.offset)
        else:
            await self.fatal("first message must be type 'start' or 'connect'")

    async def _on_attached(self, msg: p.Message) -> None:
        assert self.pump is not None  # noqa: S101 - set when the phase became "attached"
        if msg.type == p.INPUT:
            self.pump.submit(Op("input", data=msg.data))
            await self._touch()
        elif msg.type == p.RESIZE:
            self.pump.submit(Op("resize", cols=msg.cols, rows=msg.rows))
        elif msg.type == p.KILL:
            self.pump.submit(Op("kill"))
        else:
            await self.error(f"'{msg.type}' is not allowed here: already attached to {self.tag}")
            return
        # Hold the socket reader while the host agent is behind, instead of dropping.
        await self.pump.wait_for_room()

    # --- authorisation and attach ------------------------------------------------

    async def _auth_deadline(self) -> None:
        timeout = float(settings.PTY_AUTH_TIMEOUT_SECONDS)
        await asyncio.sleep(timeout)
        await self.fatal(f"authentication timed out: no credentials within {timeout:g} seconds")

    async def _authorize(self, caller: Caller) -> None:
        if self.admin and not caller.is_staff:
            await self.fatal("the admin terminal requires a staff account")
            return
        capsule = await _find_capsule(self.scope["url_route"]["kwargs"]["capsule_id"], caller, self.admin)
        if capsule is None:
            await self.fatal("sandbox not found")
        elif capsule.status != "running":
            await self.fatal(f"sandbox is not running (status: {capsule.status})")
        elif not capsule.host_address:
            await self.fatal(HOST_UNREACHABLE)
        else:
            self.capsule = capsule
            self.caller = caller
            self.phase = "first"
            self._spawn("first_frame", self._first_frame_deadline())

    async def _first_frame_deadline(self) -> None:
        timeout = float(settings.PTY_FIRST_FRAME_TIMEOUT_SECONDS)
        await asyncio.sleep(timeout)
        await self.fatal(f"no 'start' or 'connect' within {timeout:g} seconds")

    # --- the dialect ---------------------------------------------------------------

    def _choose(self, dialect: str) -> None:
        """The client's dialect is now known: held output goes out in it."""
        self.codec = dialects.codec(dialect, extensions=self.extensions)
        self._cancel("dialect")
        if self.cursor is not None:
            self.cursor.open()

    async def _default_dialect(self) -> None:
        await asyncio.sleep(settings.PTY_DIALECT_WAIT_MS / 1000)
        if self.codec is None:
            log.info("pty %s: no dialect shown; using %s", self.group, settings.PTY_DEFAULT_DIALECT)
            self.tasks.pop("dialect", None)  # done: _choose must not cancel this task
            self._choose(settings.PTY_DEFAULT_DIALECT)

    async def _start(self, start: p.StartRequest) -> None:
        assert self.capsule is not None  # noqa: S101 - phase "first" implies a capsule
        request = pb.PtyAttachRequest(
            sandbox_id=self.capsule.id,
            tag=p.new_tag(),
            cmd=start.cmd,
            args=start.args,
            cols=start.cols,
            rows=start.rows,
            envs=start.envs,
            cwd=start.cwd,
            user=start.user,
            owner=self.caller.label if self.caller else "",
        )
        await self._attach(request.tag, request)

    async def _connect(self, tag: str, offset: int | None) -> None:
        assert self.capsule is not None  # noqa: S101 - phase "first" implies a capsule
        if not rules.is_tag(tag):
            await self.fatal(f"pty session {tag[:64]} not found")
            return
        if offset is not None:  # a client that resumes by offset reads the extensions
            self.extensions = True
            if self.codec is not None:
                self.codec.extensions = True
        await self._join(tag)
        assert self.cursor is not None  # noqa: S101 - made by _join
        self.cursor.next_offset = offset or 0
        # In a task of its own: the catch-up may wait for the client's first input to show its
        # dialect, which this consumer must be free to receive.
        self._spawn("lead", self._resume(offset is None))

    async def _resume(self, recent_screen: bool) -> None:
        """Catches a joining viewer up from its offset, then leads whenever the lease is free."""
        assert self.cursor is not None  # noqa: S101 - made by _join
        # Without an offset a newcomer gets the recent screen, minus the terminal
        # queries in it that the browser would otherwise answer into the shell.
        try:
            ended = await self.cursor.catch_up(None, neutralize_queries=recent_screen)
        except grpc.aio.AioRpcError as exc:
            await self.fatal(describe(exc))
            return
        if ended is not None:
            await self._exit(ended.exit_code)
            return
        self.attached.set()
        await self._lead(pb.PtyAttachRequest())

    async def _attach(self, tag: str, request: pb.PtyAttachRequest) -> None:
        """Starts a new session: this connection leads it from its first byte."""
        await self._join(tag)
        self._spawn("lead", self._lead(request))

    async def _join(self, tag: str) -> None:
        assert self.capsule is not None  # noqa: S101 - phase "first" implies a capsule
        self.tag = tag
        self.group = group_name(self.capsule.id, tag)
        self.phase = "attached"
        self.pump = InputPump(self._send_op)
        self._spawn("input", self.pump.run())
        self._cancel("first_frame")
        self.cursor = OutputCursor(
            self.group,
            self.send_json_frame,
            self._send_output,
            self._send_lost,
            self._read_agent,
            send_window(self.scope),
            self._progressed,
            self._exit,
        )
        if self.codec is None:
            self.cursor.shut()
            self._spawn("dialect", self._default_dialect())
        self.audience = Audience(
            self.group,
            self.channel_name,
            self.channel_layer,
            self._offset,
            self._heard,
            count_every=float(settings.PTY_VIEWER_COUNT_SECONDS),
        )
        # Join before reading anything, so that no byte published for the group is missed.
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.audience.enter()
        await _record_viewer(self.capsule.id, tag, 1)

    async def _lead(self, first: pb.PtyAttachRequest) -> None:
        """Leads the session whenever its lease is free, until the process exits."""
        capsule = self.capsule
        assert capsule is not None  # noqa: S101 - phase "first" implies a capsule
        assert capsule.host_address  # noqa: S101 - and a running capsule a host
        stub = aio_stub_for(capsule.host_address)
        requests = [first] if first.cmd else []
        self._request = first

        async def stream() -> int:
            # The starter's request once; after that, resume exactly where this client is.
            request = requests.pop() if requests else None
            if request is None:
                request = pb.PtyAttachRequest(
                    sandbox_id=capsule.id, tag=self.tag, resume=True, from_offset=self._offset()
                )
            assert self.audience is not None  # noqa: S101 - made by _join
            hooks = LeaderHooks(
                started=self._started,
                output=self._touch,
                exited=self._exited,
                pace=self.audience.pace,
                deliver=self.terminal_output,
                shared=self.audience.shared,
            )
            async with self.audience.leading():
                return await lead(stub, request, self.channel_layer, self.group, hooks)

        try:
            await keep_leading(leases(), lease_key(self.group), self.channel_name, stream)
        except StreamFailed as exc:
            if exc.attached or not first.cmd:
                # Everyone watching lost the session: tell them all.
                await self.channel_layer.group_send(
                    self.group, {"type": ERROR_EVENT, "data": str(exc), "fatal": True}
                )
            elif str(exc) != HOST_UNREACHABLE:
                await self.fatal(f"failed to start pty: {exc}")
            else:
                await self.fatal(str(exc))

    async def _exited(self, exit_code: int) -> None:
        assert self.capsule is not None  # noqa: S101 - a leader's
        assert self.audience is not None  # noqa: S101 - a leader's
        await _record_exit(self.capsule.id, self.tag, exit_code)
        await self.audience.ended()

    async def _started(self, started: pb.PtyStarted) -> None:
        assert self.capsule is not None  # noqa: S101 - a session was started in this capsule
        self.attached.set()
        await self.send_json_frame(p.STARTED, tag=started.tag, pid=started.pid)
        command = " ".join([self._request.cmd, *self._request.args])
        await _record_started(self.capsule.id, started.tag, self._request.owner, command, started.pid)

    async def _send_op(self, op: Op) -> None:
        assert self.capsule is not None  # noqa: S101 - phase "first" implies a capsule
        assert self.capsule.host_address  # noqa: S101 - and a running capsule a host
        await self.attached.wait()
        if self.agent_stream is None:
            stub = aio_stub_for(self.capsule.host_address)
            self.agent_stream = AgentStream(stub, self.capsule.id, self.tag)
        try:
            await self.agent_stream.send(op)
        except OpFailed as exc:
            verb = {"input": "send input", "resize": "resize", "kill": "kill"}[op.kind]
            await self.error(f"failed to {verb}: {exc}")

    # --- group events ------------------------------------------------------------

    async def terminal_output(self, event: dict[str, Any]) -> None:
        if self.cursor is not None:
            await self.cursor.output(event["offset"], event["data"])

    async def terminal_mark(self, event: dict[str, Any]) -> None:
        if self.cursor is not None:
            self.cursor.mark(event["offset"])

    async def terminal_exit(self, event: dict[str, Any]) -> None:
        if self.cursor is not None:
            await self.cursor.exit(event["offset"], event["exit_code"])

    async def _exit(self, exit_code: int) -> None:
        await self.send_json_frame(p.EXIT, exit_code=exit_code)
        await self._close(1000)

    def _read_agent(
        self, offset: int, until: int | None, neutralize_queries: bool
    ) -> AsyncIterator[Chunk | Missed | Ended]:
        assert self.capsule is not None  # noqa: S101 - phase "first" implies a capsule
        assert self.capsule.host_address  # noqa: S101 - and a running capsule a host
        stub = aio_stub_for(self.capsule.host_address)
        return read_output(
            stub, self.capsule.id, self.tag, offset, until, neutralize_queries=neutralize_queries
        )

    # --- the audience ------------------------------------------------------------------

    def _offset(self) -> int:
        return self.cursor.next_offset if self.cursor is not None else 0

    def _heard(self) -> int:
        return self.cursor.seen_end if self.cursor is not None else 0

    def _progressed(self, offset: int) -> None:
        if self.audience is not None:
            self.audience.moved()

    async def terminal_progress(self, event: dict[str, Any]) -> None:
        if self.audience is not None:
            self.audience.asked()

    async def terminal_joined(self, event: dict[str, Any]) -> None:
        if self.audience is not None:
            self.audience.someone_joined()

    async def terminal_error(self, event: dict[str, Any]) -> None:
        await self.error(event["data"], fatal=event["fatal"])
        if event["fatal"]:
            await self._close(1000)

    # --- sending and closing -----------------------------------------------------

    async def send_json_frame(self, kind: str, **fields: Any) -> None:
        if self.phase != "closed":
            await self.send(text_data=p.frame(kind, **fields))

    async def _send_output(self, offset: int, data: bytes) -> None:
        assert self.codec is not None  # noqa: S101 - the cursor is shut until there is one
        await self._send_frame(self.codec.output(offset, data))

    async def _send_lost(self, lost: int, offset: int) -> None:
        assert self.codec is not None  # noqa: S101 - the cursor is shut until there is one
        await self._send_frame(self.codec.lost(lost, offset))

    async def _send_frame(self, frame: dialects.Frame) -> None:
        if self.phase == "closed":
            return
        if isinstance(frame, bytes):
            await self.send(bytes_data=frame)
        else:
            await self.send(text_data=frame)

    async def error(self, message: str, *, fatal: bool = False) -> None:
        await self.send_json_frame(p.ERROR, data=message, fatal=fatal)

    async def fatal(self, message: str) -> None:
        await self.error(message, fatal=True)
        await self._close(1000)

    async def _close(self, code: int, reason: str | None = None) -> None:
        if self.phase != "closed":
            self.phase = "closed"
            await self.close(code=code, reason=reason)
            # Free everything now rather than when the server reports the close.
            await self._release()

    async def _keepalive(self) -> None:
        interval = float(settings.PTY_KEEPALIVE_SECONDS)
        while True:
            await asyncio.sleep(interval)
            await self.send_json_frame(p.PING)

    async def _touch(self) -> None:
        # The idle reaper must see a terminal in use as active, but one UPDATE per
        # keystroke is wasteful: at most one per interval per connection.
        now = time.monotonic()
        interval = float(settings.PTY_ACTIVITY_INTERVAL_SECONDS)
        if self.capsule is not None and now - self.last_touch >= interval:
            self.last_touch = now
            await _record_activity(self.capsule.id)

    # --- cleanup -------------------------------------------------------------------

    def _spawn(self, name: str, coro: Any) -> None:
        self.tasks[name] = asyncio.create_task(coro, name=f"pty-{name}")

    def _cancel(self, name: str) -> None:
        task = self.tasks.pop(name, None)
        if task is not None:
            task.cancel()

    async def disconnect(self, code: int) -> None:
        self.phase = "closed"
        await self._release()

    async def _release(self) -> None:
        """Leaves the session and ends every task of this connection; safe to call twice."""
        if self.released:
            return
        self.released = True
        try:
            if self.pump is not None:
                # Input already accepted still reaches the process.
                try:
                    await asyncio.wait_for(self.pump.drained(), rpc_timeout())
                except TimeoutError:
                    log.warning("pty %s: input not delivered before close", self.group)
        finally:
            if self.agent_stream is not None:
                self.agent_stream.close()
            if self.cursor is not None:
                self.cursor.stop()
            # A task may be the one closing the socket (a fatal error found by the
            # stream worker): it finishes on its own, the others are cancelled.
            current = asyncio.current_task()
            tasks = [task for task in self.tasks.values() if task is not current]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.tasks.clear()
            if self.group:
                await self.channel_layer.group_discard(self.group, self.channel_name)
            if self.audience is not None:
                await self.audience.leave()
            if self.capsule is not None:
                if self.group:
                    await _record_viewer(self.capsule.id, self.tag, -1)
                await _record_activity(self.capsule.id)


class AdminPtyConsumer(PtyConsumer):
    admin = True
