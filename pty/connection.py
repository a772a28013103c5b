"""One client's terminal socket: its dialect, its credentials, and the viewer it becomes.

A connection goes auth -> first -> attached -> closed. It learns the client's dialect from the
handshake or from what the client does (pty/dialects.py), authenticates it (pty/auth.py: a
header, the session cookie, or a first ``auth`` frame), checks the capsule, and on ``start`` or
``connect`` makes a ``Viewer`` (pty/viewer.py) of it. Every task of the connection (keepalive,
deadlines, the dialect's window, the viewer's own) runs in one task group, ended together
however the connection ends: by the client, by a fatal error, or by the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine
from typing import Any, Protocol

from channels.db import database_sync_to_async
from channels.layers import BaseChannelLayer
from django.conf import settings

from capsules.actions import record_activity
from capsules.agents import HOST_UNREACHABLE
from capsules.services import find_capsule
from capsules.terminals import reserve_session
from protos import hostagent_pb2 as pb
from protos import rules
from recordings.options import arecording_for
from wrenn.flow import SendWindow

from . import dialects
from . import protocol as p
from .auth import AuthFailed, Caller, caller_from_token
from .credentials import check_interval, still_valid
from .dialects import Codec, DialectError, Frame
from .input import Op
from .viewer import Capsule, Viewer

log = logging.getLogger(__name__)

_record_activity = database_sync_to_async(record_activity)


@database_sync_to_async
def _find_capsule(sandbox_id: str, caller: Caller, admin_route: bool) -> Capsule | str:
    """The capsule, or why the caller cannot have a terminal in it."""
    if admin_route:
        sandbox = find_capsule(sandbox_id, any_team=True)
    elif caller.team_id is not None:
        sandbox = find_capsule(sandbox_id, team_id=caller.team_id)
    else:
        sandbox = find_capsule(sandbox_id, user=caller.user)
    if sandbox is None:
        return "sandbox not found"
    if sandbox.status != "running":
        return f"sandbox is not running (status: {sandbox.status})"
    if sandbox.host is None or not sandbox.host.address:
        return HOST_UNREACHABLE
    return Capsule(sandbox.id, sandbox.host.address, str(sandbox.team_id))


_reserve_session = database_sync_to_async(reserve_session)


class Socket(Protocol):
    """What a connection needs of the WebSocket server (the consumer adapts Channels to it)."""

    channel_name: str
    channel_layer: BaseChannelLayer

    async def accept(self, subprotocol: str | None) -> None: ...
    async def send_frame(self, frame: Frame) -> None: ...
    async def close(self, code: int, reason: str | None) -> None: ...


class Connection:
    """``admin``: the staff route, any team's capsule."""

    def __init__(
        self,
        socket: Socket,
        capsule_id: str,
        *,
        admin: bool,
        window: SendWindow | None,
        subprotocols: list[str],
        query_string: bytes,
    ) -> None:
        self.socket = socket
        self.channel_name = socket.channel_name
        self.channel_layer = socket.channel_layer
        self.window = window
        self.capsule_id = capsule_id
        self.admin = admin
        self.phase = "auth"  # auth -> first -> attached -> closed
        self.capsule: Capsule | None = None
        self.caller: Caller | None = None
        self.viewer: Viewer | None = None
        # The client's dialect: stated in the handshake, else shown later (None till then).
        self.codec: Codec | None = None
        self.extensions = False
        self._subprotocols = subprotocols
        self._query_string = query_string
        self._last_touch = 0.0
        self._tasks: asyncio.TaskGroup | None = None
        self._named: dict[str, asyncio.Task[None]] = {}
        self._run: asyncio.Task[None] | None = None
        self._running = asyncio.Event()
        self._ending = False

    # --- the connection's life ------------------------------------------------------------------

    async def opened(self, caller: Caller | None, auth_error: str | None) -> None:
        """The handshake arrived with these credentials (from the headers or the cookie)."""
        self._run = asyncio.create_task(self._run_tasks(), name="pty-connection")
        await self._running.wait()
        try:
            choice = dialects.from_handshake(self._subprotocols, self._query_string)
        except DialectError as exc:
            await self.socket.accept(None)
            await self.fatal(str(exc))
            return
        self.extensions = choice.extensions
        if choice.dialect is not None:
            self.codec = dialects.codec(choice.dialect, extensions=choice.extensions)
        await self.socket.accept(choice.subprotocol)
        self._spawn("ping", self._keepalive())
        if auth_error:
            await self.fatal(auth_error)
        elif caller is None:
            seconds = float(settings.PTY_AUTH_TIMEOUT_SECONDS)
            message = f"authentication timed out: no credentials within {seconds:g} seconds"
            self._spawn("auth_timeout", self._deadline(seconds, message))
        else:
            await self._authorize(caller)

    async def _run_tasks(self) -> None:
        """Holds the connection's task group open until the connection ends; then cleans up."""
        try:
            async with asyncio.TaskGroup() as tasks:
                self._tasks = tasks
                self._running.set()
                await asyncio.Event().wait()  # until cancelled by close() or closed()
        except* Exception:
            log.exception("pty %s: a task of the connection failed", self.capsule_id)
            await self._close_socket(1011, None)
        finally:
            self._tasks = None
            self._ending = True  # over: nothing left to stop, nor input to wait for
            self.phase = "closed"
            if self.viewer is not None:
                await self.viewer.leave()
            if self.capsule is not None:
                await _record_activity(self.capsule.id)

    async def closed(self) -> None:
        """The client went away (or the server closed the socket): ends everything, and waits."""
        await self._end()
        if self._run is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._run

    async def _end(self) -> None:
        """Stops the connection's tasks (once: a second cancel would cut their cleanup short);
        the cleanup runs as their group ends."""
        if self._ending:
            return
        self._ending = True
        self.phase = "closed"
        if self.viewer is not None:
            await self.viewer.drain_input()
        if self._run is not None:
            self._run.cancel()

    def _spawn(self, name: str, coro: Coroutine[Any, Any, None]) -> None:
        if self._tasks is None or self.phase == "closed":  # the connection is ending
            coro.close()
            return
        try:
            self._named[name] = self._tasks.create_task(coro, name=f"pty-{name}")
        except RuntimeError:  # the group is shutting down (a task of it failed)
            coro.close()

    def _cancel(self, name: str) -> None:
        task = self._named.pop(name, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    # --- what the client sends ------------------------------------------------------------------

    async def text(self, text: str) -> None:
        if self.phase == "closed":
            return
        if await self._too_big(len(text.encode("utf-8"))):
            return
        try:
            msg = p.parse(text)
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

    async def binary(self, data: bytes) -> None:
        if self.phase == "closed":
            return
        if self.codec is None and self.phase == "attached":
            shown = dialects.shown_by(dialects.BINARY_FRAME)
            if shown is not None:
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
        await self.close(p.CLOSE_TOO_BIG, f"frame exceeds {p.MAX_FRAME_BYTES} bytes")
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
        assert self.viewer is not None  # noqa: S101 - made when the phase became "attached"
        if msg.type == p.INPUT:
            await self.viewer.submit(Op("input", data=msg.data))
        elif msg.type == p.RESIZE:
            await self.viewer.submit(Op("resize", cols=msg.cols, rows=msg.rows))
        elif msg.type == p.KILL:
            await self.viewer.submit(Op("kill"))
        else:
            await self.error(f"'{msg.type}' is not allowed here: already attached to {self.viewer.tag}")

    # --- authorisation and attach ---------------------------------------------------------------

    async def _deadline(self, seconds: float, message: str) -> None:
        await asyncio.sleep(seconds)
        await self.fatal(message)

    async def _authorize(self, caller: Caller) -> None:
        if self.admin and not caller.is_staff:
            await self.fatal("the admin terminal requires a staff account")
            return
        found = await _find_capsule(self.capsule_id, caller, self.admin)
        if isinstance(found, str):
            await self.fatal(found)
            return
        self.capsule, self.caller = found, caller
        self.phase = "first"
        self._spawn("credentials", self._watch_credentials(caller, found.team_id))
        seconds = float(settings.PTY_FIRST_FRAME_TIMEOUT_SECONDS)
        self._spawn(
            "first_frame", self._deadline(seconds, f"no 'start' or 'connect' within {seconds:g} seconds")
        )

    async def _watch_credentials(self, caller: Caller, team_id: str) -> None:
        """Closes the socket once the credentials it was opened with no longer hold."""
        while True:
            await asyncio.sleep(check_interval())
            try:
                reason = await still_valid(caller, team_id, staff=self.admin)
            except Exception:  # the database away: the next check decides
                log.warning("pty %s: checking credentials failed", self.capsule_id, exc_info=True)
                continue
            if reason is not None:
                await self.fatal(f"authentication revoked: {reason}")
                return

    async def _start(self, start: p.StartRequest) -> None:
        assert self.capsule is not None  # noqa: S101 - phase "first" implies a capsule
        tag = p.new_tag()
        limit = int(settings.PTY_MAX_SESSIONS_PER_CAPSULE)
        open_now = await _reserve_session(self.capsule.id, tag, limit)
        if open_now is not None:
            await self.fatal(
                f"too many terminal sessions: this capsule has {open_now} (at most {limit}); "
                "kill one or wait for one to exit"
            )
            return
        request = start.attach_request(self.capsule.id, tag, self.caller.label if self.caller else "")
        # The team's choice: record it (the default), and its input too (off by default).
        request.recording.CopyFrom(await arecording_for(self.capsule.team_id, self.capsule.id, tag))
        await self._attach(tag, request, None)

    async def _connect(self, tag: str, offset: int | None) -> None:
        if not rules.is_tag(tag):
            await self.fatal(f"pty session {tag[:64]} not found")
            return
        if offset is not None:  # a client that resumes by offset reads the extensions
            self.extensions = True
            if self.codec is not None:
                self.codec.extensions = True
        await self._attach(tag, None, offset)

    async def _attach(self, tag: str, start: pb.PtyAttachRequest | None, offset: int | None) -> None:
        assert self.capsule is not None  # noqa: S101 - phase "first" implies a capsule
        self._cancel("first_frame")
        self.phase = "attached"
        viewer = Viewer(self, self.capsule, tag, self.caller.label if self.caller else "", offset=offset or 0)
        self.viewer = viewer
        if self.codec is None:
            viewer.cursor.shut()
            self._spawn("dialect", self._default_dialect())
        await viewer.join()
        self._spawn("viewer", viewer.run(start, recent_screen=start is None and offset is None))

    # --- the dialect ------------------------------------------------------------------------------

    def _choose(self, dialect: str) -> None:
        """The client's dialect is now known: held output goes out in it."""
        self.codec = dialects.codec(dialect, extensions=self.extensions)
        self._cancel("dialect")
        if self.viewer is not None:
            self.viewer.cursor.open()

    async def _default_dialect(self) -> None:
        await asyncio.sleep(settings.PTY_DIALECT_WAIT_MS / 1000)
        if self.codec is None:
            log.info("pty %s: no dialect shown; using %s", self.capsule_id, settings.PTY_DEFAULT_DIALECT)
            self._choose(settings.PTY_DEFAULT_DIALECT)

    # --- what the viewer sends (viewer.Client) --------------------------------------------------

    async def send_control(self, kind: str, **fields: Any) -> None:
        if self.phase != "closed":
            await self.socket.send_frame(p.frame(kind, **fields))

    async def send_output(self, offset: int, data: bytes) -> None:
        assert self.codec is not None  # noqa: S101 - the cursor is shut until there is one
        if self.phase != "closed":
            await self.socket.send_frame(self.codec.output(offset, data))

    async def send_lost(self, lost: int, offset: int) -> None:
        assert self.codec is not None  # noqa: S101 - the cursor is shut until there is one
        if self.phase != "closed":
            await self.socket.send_frame(self.codec.lost(lost, offset))

    async def error(self, message: str, *, fatal: bool = False) -> None:
        await self.send_control(p.ERROR, data=message, fatal=fatal)

    async def fatal(self, message: str) -> None:
        await self.error(message, fatal=True)
        await self.close(1000)

    async def exited(self, exit_code: int) -> None:
        await self.send_control(p.EXIT, exit_code=exit_code)
        await self.close(1000)

    async def touch(self) -> None:
        # The idle reaper must see a terminal in use as active, but one UPDATE per
        # keystroke is wasteful: at most one per interval per connection.
        now = time.monotonic()
        interval = float(settings.PTY_ACTIVITY_INTERVAL_SECONDS)
        if self.capsule is not None and now - self._last_touch >= interval:
            self._last_touch = now
            await _record_activity(self.capsule.id)

    async def close(self, code: int, reason: str | None = None) -> None:
        """Closes the socket and ends the connection (the caller may be one of its tasks)."""
        if self.phase != "closed":
            await self._close_socket(code, reason)
            await self._end()

    async def _close_socket(self, code: int, reason: str | None) -> None:
        self.phase = "closed"
        with contextlib.suppress(Exception):  # already gone: nothing to tell
            await self.socket.close(code, reason)

    async def _keepalive(self) -> None:
        interval = float(settings.PTY_KEEPALIVE_SECONDS)
        while True:
            await asyncio.sleep(interval)
            await self.send_control(p.PING)
