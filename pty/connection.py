"""One client's terminal socket: its dialect, its credentials, and the viewer it becomes.

A connection goes auth -> first -> attached -> closed. It learns the client's dialect from the
handshake or from what the client does (pty/dialects.py), authenticates it (pty/auth.py: a
header, the session cookie, or a first ``auth`` frame), checks the capsule, and on ``start`` or
``connect`` makes a ``Viewer`` (pty/viewer.py) of it. Every task of the connection (keepalive,
deadlines, the dialect's window, the viewer's own) runs in one task group, ended together
however the connection ends: by the client, by a fatal error, or by the server.

A viewer is a peer or an observer (pty/modes.py says who may be which); an observer's input,
resize and kill are refused, each with its own non-fatal error. Peers change modes with
``control`` frames and revoke a share link with ``revoke``; every such step, and every refusal
of credentials, goes to the audit trail (pty/audit.py).
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
from django.utils import timezone

from audit import trail
from capsules.actions import record_activity
from capsules.agents import HOST_UNREACHABLE
from capsules.services import find_capsule
from capsules.terminals import reserve_session
from protos import hostagent_pb2 as pb
from protos import rules
from recordings.options import arecording_for
from shares import links as share_links
from shares.models import ShareLink
from wrenn.flow import SendWindow

from . import dialects, modes
from . import protocol as p
from .audit import SocketAudit
from .auth import AuthFailed, Caller, caller_from_token
from .credentials import check_interval, still_valid
from .dialects import Codec, DialectError, Frame
from .input import Op
from .roster import CONTROL_EVENT, REVOKED_EVENT, Entry, new_viewer_id
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


@database_sync_to_async
def _revoke_share(share_id: str, capsule_id: str, tag: str, actor: trail.Actor, where: trail.Where) -> bool:
    """Revokes the share link a viewer of this session came in on; whether this call did."""
    link = (
        ShareLink.objects.select_related("sandbox")
        .filter(pk=share_id, sandbox_id=capsule_id, tag=tag)
        .first()
    )
    return link is not None and share_links.revoke(link, actor, where, how="control frame")


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
        where: trail.Where | None = None,
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
        # A peer types, resizes and kills; an observer only watches (pty/modes.py).
        self.mode = p.PEER
        self.audit = SocketAudit(where or trail.Where(), capsule_id)
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

    async def opened(
        self, caller: Caller | None, auth_error: str | None, auth_actor: trail.Actor | None = None
    ) -> None:
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
            await self._auth_refused(auth_error, auth_actor)
        elif caller is None:
            seconds = float(settings.PTY_AUTH_TIMEOUT_SECONDS)
            message = f"authentication timed out: no credentials within {seconds:g} seconds"
            self._spawn("auth_timeout", self._deadline(seconds, message, audited=True))
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
            await self._auth_refused('authentication required: send {"type": "auth", "token": ...} first')
            return
        self._cancel("auth_timeout")
        await self._authenticate(msg.token)

    async def _authenticate(self, token: str) -> None:
        try:
            caller = await caller_from_token(token)
        except AuthFailed as exc:
            await self._auth_refused(str(exc), exc.actor)
            return
        await self._authorize(caller)

    async def _auth_refused(self, reason: str, actor: trail.Actor | None = None) -> None:
        await self.audit.auth_failed(reason, actor)
        await self.fatal(reason)

    async def _on_first(self, msg: p.Message) -> None:
        if msg.type == p.START and msg.start is not None:
            await self._start(msg.start)
        elif msg.type == p.CONNECT:
            await self._connect(msg.tag, msg.offset, msg.mode)
        elif msg.type == p.AUTH and self.caller is not None and self.caller.method == "session":
            # Credentials named in a frame win over the cookie the browser sent on its own: a
            # signed-in person who opens a share link watches as that link.
            self._cancel("credentials")
            self._cancel("first_frame")
            self.capsule = self.caller = None
            self.phase = "auth"
            await self._authenticate(msg.token)
        else:
            await self.fatal("first message must be type 'start' or 'connect'")

    async def _on_attached(self, msg: p.Message) -> None:
        assert self.viewer is not None  # noqa: S101 - made when the phase became "attached"
        if msg.type in (p.INPUT, p.RESIZE, p.KILL) and self.mode != p.PEER:
            await self._refuse_observer(msg.type)
        elif msg.type == p.INPUT:
            await self.viewer.submit(Op("input", data=msg.data))
        elif msg.type == p.RESIZE:
            await self.viewer.submit(Op("resize", cols=msg.cols, rows=msg.rows))
        elif msg.type == p.KILL:
            await self.viewer.submit(Op("kill"))
        elif msg.type == p.CONTROL and msg.mode is not None:
            await self._control(msg.viewer, msg.mode)
        elif msg.type == p.REVOKE and msg.viewer is not None:
            await self._revoke(msg.viewer)
        else:
            await self.error(f"'{msg.type}' is not allowed here: already attached to {self.viewer.tag}")

    async def _refuse_observer(self, kind: str) -> None:
        assert self.viewer is not None  # noqa: S101 - attached
        if kind == p.KILL:
            await self.error(modes.KILL_REFUSED)
            await self.audit.refused(trail.TERMINAL_KILL, modes.KILL_REFUSED, tag=self.viewer.tag)
        else:
            await self.error(modes.INPUT_REFUSED if kind == p.INPUT else modes.RESIZE_REFUSED)

    # --- modes: control and revoke ----------------------------------------------------------------

    async def _control(self, target_id: str | None, mode: str) -> None:
        """``control``: this viewer takes or gives up control, or a peer sets another's mode."""
        assert self.viewer is not None  # noqa: S101 - attached
        assert self.caller is not None  # noqa: S101 - attached
        me, tag = self.viewer.roster.entry, self.viewer.tag
        if target_id is None or target_id == me.id:
            if mode == p.PEER and not me.may_control:
                reason = f"control refused: {modes.refuse_peer(self.caller)}"
                await self.error(reason)
                await self.audit.refused(trail.TERMINAL_CONTROL, reason, tag=tag, detail={"mode": mode})
            elif self.mode == mode:
                await self.error(f"control: this viewer is already {modes.a(mode)}")
            else:
                await self.set_mode(mode)
                detail = {"viewer": me.id, "target": me.label, "mode": mode, "how": "taken"}
                await self.audit.event(trail.TERMINAL_CONTROL, tag=tag, detail=detail)
            return
        if self.mode != p.PEER:
            await self.error(modes.NOT_PEER_CONTROL)
            await self.audit.refused(trail.TERMINAL_CONTROL, modes.NOT_PEER_CONTROL, tag=tag)
            return
        target = await self.viewer.roster.find(target_id)
        if target is None:
            await self.error(f"control refused: {modes.no_viewer(target_id)}")
        elif mode == p.PEER and not target.may_control:
            reason = modes.only_observes(target.id, target.label)
            await self.error(reason)
            await self.audit.refused(trail.TERMINAL_CONTROL, reason, tag=tag, detail={"viewer": target.id})
        elif target.mode == mode:
            await self.error(f"control: viewer {target.id} is already {modes.a(mode)}")
        else:
            event = {"type": CONTROL_EVENT, "viewer": target.id, "mode": mode}
            await self.channel_layer.send(target.channel, event)
            detail = {"viewer": target.id, "target": target.label, "mode": mode, "how": "handed"}
            await self.audit.event(trail.TERMINAL_CONTROL, tag=tag, detail=detail)

    async def set_mode(self, mode: str) -> None:
        assert self.viewer is not None  # noqa: S101 - attached
        self.mode = mode
        await self.viewer.roster.set_mode(mode)

    async def controlled(self, viewer_id: str, mode: str) -> None:
        """A peer (on any worker) set this viewer's mode."""
        if self.viewer is None or viewer_id != self.viewer.roster.entry.id or mode == self.mode:
            return
        if mode == p.PEER and not self.viewer.roster.entry.may_control:
            return  # the sender checked this already; a stale roster entry may not say so
        await self.set_mode(mode)

    async def _revoke(self, target_id: str) -> None:
        """``revoke``: a peer takes a share link away from the viewer that came in on it."""
        assert self.viewer is not None  # noqa: S101 - attached
        assert self.capsule is not None  # noqa: S101 - attached
        tag = self.viewer.tag
        if self.mode != p.PEER:
            await self.error(modes.NOT_PEER_REVOKE)
            await self.audit.refused(trail.SHARE_REVOKE, modes.NOT_PEER_REVOKE, tag=tag)
            return
        target = await self.viewer.roster.find(target_id)
        if target is None:
            await self.error(f"revoke refused: {modes.no_viewer(target_id)}")
            return
        if not target.share:
            await self.error(modes.no_link(target.id))
            return
        await _revoke_share(target.share, self.capsule.id, tag, self.audit.actor, self.audit.where)
        # Whether this call revoked it or someone just did, the link's viewers go now.
        await self.channel_layer.group_send(self.viewer.group, {"type": REVOKED_EVENT, "share": target.share})

    async def share_revoked(self, share_id: str) -> None:
        if self.caller is not None and self.caller.share_id and self.caller.share_id == share_id:
            await self.fatal(f"authentication revoked: {share_links.REVOKED}")

    # --- authorisation and attach ---------------------------------------------------------------

    async def _deadline(self, seconds: float, message: str, *, audited: bool = False) -> None:
        await asyncio.sleep(seconds)
        if audited:
            await self.audit.auth_failed(message)
        await self.fatal(message)

    async def _authorize(self, caller: Caller) -> None:
        if self.admin and not caller.is_staff:
            await self._auth_refused("the admin terminal requires a staff account", caller.actor)
            return
        if caller.share_id and caller.share_capsule != self.capsule_id:
            await self._auth_refused(modes.SHARE_CAPSULE, caller.actor)
            return
        found = await _find_capsule(self.capsule_id, caller, self.admin)
        if isinstance(found, str):
            await self.fatal(found)
            return
        self.capsule, self.caller = found, caller
        self.audit.actor, self.audit.team_id = caller.actor, found.team_id
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
        assert self.capsule is not None  # noqa: S101 - phase "first"
        assert self.caller is not None  # noqa: S101 - phase "first"
        refused = modes.refuse_start(self.caller)
        if refused is not None:
            await self.audit.failed(trail.TERMINAL_START, refused)
            await self.fatal(refused)
            return
        tag = p.new_tag()
        limit = int(settings.PTY_MAX_SESSIONS_PER_CAPSULE)
        open_now = await _reserve_session(self.capsule.id, tag, limit)
        if open_now is not None:
            reason = (
                f"too many terminal sessions: this capsule has {open_now} (at most {limit}); "
                "kill one or wait for one to exit"
            )
            await self.audit.failed(trail.TERMINAL_START, reason)
            await self.fatal(reason)
            return
        request = start.attach_request(self.capsule.id, tag, self.caller.label)
        # The team's choice: record it (the default), and its input too (off by default).
        request.recording.CopyFrom(await arecording_for(self.capsule.team_id, self.capsule.id, tag))
        self.mode = p.PEER  # a process one starts is one's own, on either route
        await self._attach(tag, request, None)

    async def _connect(self, tag: str, offset: int | None, mode: str | None) -> None:
        assert self.caller is not None  # noqa: S101 - phase "first" implies a caller
        if not rules.is_tag(tag):
            await self.fatal(f"pty session {tag[:64]} not found")
            return
        refused = modes.refuse_session(self.caller, tag)
        if refused is None and mode == p.PEER and self.caller.observe_only:
            refused = modes.refuse_peer(self.caller)
        if refused is not None:
            await self.audit.failed(trail.TERMINAL_JOIN, refused, tag=tag, detail={"mode": mode})
            await self.fatal(refused)
            return
        self.mode = mode or modes.default_mode(self.caller, self.admin)
        if self.admin and mode == p.PEER:
            # Staff on the admin route observe unless they take control, as this does.
            detail = {"mode": p.PEER, "how": "connect", "target": self.caller.label}
            await self.audit.event(trail.TERMINAL_CONTROL, tag=tag, detail=detail)
        if offset is not None:  # a client that resumes by offset reads the extensions
            self.extensions = True
            if self.codec is not None:
                self.codec.extensions = True
        await self._attach(tag, None, offset)

    async def _attach(self, tag: str, start: pb.PtyAttachRequest | None, offset: int | None) -> None:
        assert self.capsule is not None  # noqa: S101 - phase "first" implies a capsule
        self._cancel("first_frame")
        self.phase = "attached"
        assert self.caller is not None  # noqa: S101 - phase "first" implies a caller
        entry = Entry(
            id=new_viewer_id(),
            label=self.caller.label,
            mode=self.mode,
            since=timezone.now().isoformat(),
            channel=self.channel_name,
            share=self.caller.share_id,
            may_control=modes.may_control(self.caller),
        )
        viewer = Viewer(self, self.capsule, tag, self.caller.label, entry, self.audit, offset=offset or 0)
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

    async def send_viewers(self, you: str, viewers: list[dict[str, Any]]) -> None:
        # An extension frame: a reference client never sees it.
        if self.extensions:
            await self.send_control(p.VIEWERS, you=you, viewers=viewers)

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
