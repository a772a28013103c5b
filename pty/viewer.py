"""One viewer of one terminal session: the owner of everything a client's place in it needs.

A viewer has an output cursor (pty/cursor.py: in order, exactly once, at its client's pace),
an input pump to the host agent (pty/input.py), a presence in the session's audience
(pty/presence.py), an entry in the session's roster of viewers (pty/roster.py), its part in
pacing the stream (pty/pacing.py), and the lead loop: whichever
viewer holds the session's lease (on any worker) runs the gRPC stream worker (pty/stream.py).
``run`` starts the input pump and the lead loop in one task group and ``leave`` ends them
together, so none outlives the viewer. The viewer talks to its client only through a
``Client``: it knows nothing of WebSockets or dialects.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
from channels.db import database_sync_to_async
from channels.layers import BaseChannelLayer
from django.conf import settings
from django.db.models import Q

from audit import trail
from capsules.actions import record_terminal_exit, record_viewer
from capsules.agents import HOST_UNREACHABLE, aio_stub_for, describe, rpc_timeout
from capsules.terminals import close_sessions
from protos import hostagent_pb2 as pb
from recordings.marks import mark_soon
from wrenn.flow import SendWindow

from .audit import SocketAudit
from .catchup import Chunk, Ended, Missed, read_output
from .cursor import OutputCursor
from .input import AgentStream, InputPump, Op, OpFailed
from .leadership import keep_leading
from .leases import lease_key, leases
from .pacing import Pacer
from .presence import Presence
from .roster import Entry, Roster
from .stream import ERROR_EVENT, LeaderHooks, StreamFailed, group_name, lead

log = logging.getLogger(__name__)

_record_viewer = database_sync_to_async(record_viewer)
_record_exit = database_sync_to_async(record_terminal_exit)


@database_sync_to_async
def _close_row(sandbox_id: str, tag: str) -> None:
    close_sessions(Q(sandbox_id=sandbox_id, tag=tag))


@dataclass(frozen=True)
class Capsule:
    """A running capsule a terminal may reach: its host's agent address and its team."""

    id: str
    host_address: str
    team_id: str


class Client(Protocol):
    """What a viewer needs of the connection it serves."""

    channel_name: str
    channel_layer: BaseChannelLayer
    window: SendWindow | None

    async def send_control(self, kind: str, **fields: Any) -> None: ...
    async def send_output(self, offset: int, data: bytes) -> None: ...
    async def send_lost(self, lost: int, offset: int) -> None: ...
    async def error(self, message: str, *, fatal: bool = False) -> None: ...
    async def fatal(self, message: str) -> None: ...
    async def exited(self, exit_code: int) -> None: ...
    async def touch(self) -> None: ...
    async def send_viewers(self, you: str, viewers: list[dict[str, Any]]) -> None: ...


class Viewer:
    def __init__(
        self,
        client: Client,
        capsule: Capsule,
        tag: str,
        owner: str,
        entry: Entry,
        audit: SocketAudit,
        *,
        offset: int = 0,
    ) -> None:
        """``offset``: where this viewer's output starts (0 for the starter); ``entry``: its
        line in the session's roster; ``audit``: its connection's audit trail."""
        self.client = client
        self.capsule = capsule
        self.tag = tag
        self.owner = owner  # who started or joined, for the admin's list ("key:wrn_…")
        self.group = group_name(capsule.id, tag)
        # The session exists on the agent (started, or caught up with): input may go to it.
        self.attached = asyncio.Event()
        self.cursor = OutputCursor(
            self.group,
            client.send_control,
            client.send_output,
            client.send_lost,
            self._read_agent,
            client.window,
            self._progressed,
            client.exited,
        )
        # Set before the viewer joins the group: output and marks arriving from then on are
        # measured against it (set later, a refill begun meanwhile would be sent twice).
        self.cursor.next_offset = offset
        self.presence = Presence(
            self.group,
            client.channel_name,
            client.channel_layer,
            lambda: self.cursor.seen_end,
            count_every=float(settings.PTY_VIEWER_COUNT_SECONDS),
        )
        self.pacer = Pacer(
            self.group,
            client.channel_name,
            client.channel_layer,
            lambda: self.cursor.next_offset,
            lambda: self.presence.alone,
        )
        self.roster = Roster(self.group, client.channel_layer, entry, client.send_viewers)
        self.audit = audit
        self.pump = InputPump(self._send_op)
        self._agent_stream: AgentStream | None = None
        self._request = pb.PtyAttachRequest()
        self._joined = False
        self._audited_join = False
        self._joined_at = time.monotonic()

    # --- the viewer's life -------------------------------------------------------------------

    async def join(self) -> None:
        """Joins the session's group before anything is read, so no byte published is missed."""
        await self.client.channel_layer.group_add(self.group, self.client.channel_name)
        self._joined = True
        await self.presence.enter()
        await self.roster.enter()
        await _record_viewer(self.capsule.id, self.tag, 1)

    async def run(self, start: pb.PtyAttachRequest | None, *, recent_screen: bool = False) -> None:
        """Starts the session (``start``) or catches up with it from the cursor's offset
        (``recent_screen``: a newcomer without an offset, given the screen as it is), then leads it
        whenever its lease is free, until the process exits."""
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self.pump.run(), name="pty-input")
            tasks.create_task(self.roster.keep(), name="pty-roster")
            tasks.create_task(self._follow(start, recent_screen), name="pty-lead")

    async def drain_input(self) -> None:
        """Input already accepted still reaches the process, within the agent's deadline."""
        try:
            await asyncio.wait_for(self.pump.drained(), rpc_timeout())
        except TimeoutError:
            log.warning("pty %s: input not delivered before close", self.group)

    async def leave(self) -> None:
        """Once ``run`` has ended: leaves the session's group, audience and pacing."""
        if self._agent_stream is not None:
            self._agent_stream.close()
        self.cursor.stop()
        if self._joined:
            await self.client.channel_layer.group_discard(self.group, self.client.channel_name)
            await self.presence.leave()
            await self.roster.leave()
            await self.pacer.leave()
            await _record_viewer(self.capsule.id, self.tag, -1)
        if self._audited_join:
            self._mark("leave")
            seconds = round(time.monotonic() - self._joined_at, 3)
            await self.audit.event(
                trail.TERMINAL_LEAVE, tag=self.tag, detail={**self._detail(), "seconds": seconds}
            )

    def _detail(self) -> dict[str, Any]:
        entry = self.roster.entry
        return {"viewer": entry.id, "mode": entry.mode, **({"share_id": entry.share} if entry.share else {})}

    async def _audit_join(self) -> None:
        """The viewer has started the session or caught up with it: it is in the audit trail
        and in the recording from here (the session exists on the agent now, to take the mark)."""
        self._audited_join = True
        self._joined_at = time.monotonic()
        self._mark("join")
        await self.audit.event(trail.TERMINAL_JOIN, tag=self.tag, detail=self._detail())

    def _mark(self, what: str) -> None:
        """A marker in the session's recording, without waiting for the agent (recordings/marks.py)."""
        label = f"{what} {self.owner} ({self.roster.entry.mode})"
        mark_soon(self.capsule.host_address, self.capsule.id, self.tag, label)

    # --- what the client sends ------------------------------------------------------------------

    async def submit(self, op: Op) -> None:
        self.pump.submit(op)
        if op.kind == "input":
            await self.client.touch()
        # Hold the socket reader while the host agent is behind, instead of dropping.
        await self.pump.wait_for_room()

    # --- what the session's group says ----------------------------------------------------------

    async def output(self, offset: int, data: bytes) -> None:
        await self.cursor.output(offset, data)

    def mark(self, offset: int) -> None:
        self.cursor.mark(offset)

    async def exit(self, offset: int, exit_code: int) -> None:
        await self.cursor.exit(offset, exit_code)

    def progress_asked(self) -> None:
        self.pacer.asked()

    def someone_joined(self) -> None:
        self.presence.someone_joined()

    # --- following and leading -------------------------------------------------------------------

    async def _follow(self, start: pb.PtyAttachRequest | None, recent_screen: bool) -> None:
        if start is None:
            # Without an offset a newcomer gets the recent screen, minus the terminal
            # queries in it that the browser would otherwise answer into the shell.
            try:
                ended = await self.cursor.catch_up(None, neutralize_queries=recent_screen)
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.NOT_FOUND:
                    # No such session: the row joining opened for it must not count as one.
                    await _close_row(self.capsule.id, self.tag)
                await self.audit.failed(
                    trail.TERMINAL_JOIN, describe(exc), tag=self.tag, detail=self._detail()
                )
                await self.client.fatal(describe(exc))
                return
            await self._audit_join()
            if ended is not None:
                await self.client.exited(ended.exit_code)
                return
            self.attached.set()
            await self.roster.open()
        await self._lead(start or pb.PtyAttachRequest())

    async def _lead(self, first: pb.PtyAttachRequest) -> None:
        """Leads the session whenever its lease is free, until the process exits."""
        stub = aio_stub_for(self.capsule.host_address)
        requests = [first] if first.cmd else []
        self._request = first

        async def stream() -> int:
            # The starter's request once; after that, resume exactly where this client is.
            request = requests.pop() if requests else None
            if request is None:
                request = pb.PtyAttachRequest(
                    sandbox_id=self.capsule.id, tag=self.tag, resume=True, from_offset=self.cursor.next_offset
                )
            hooks = LeaderHooks(
                started=self._started,
                output=self.client.touch,
                exited=self._exited,
                pace=self.pacer.pace,
                deliver=self._deliver,
                shared=self.presence.shared,
            )
            async with self.presence.leading():
                return await lead(stub, request, self.client.channel_layer, self.group, hooks)

        try:
            await keep_leading(leases(), lease_key(self.group), self.client.channel_name, stream)
        except StreamFailed as exc:
            if exc.attached or not first.cmd:
                # Everyone watching lost the session: tell them all.
                await self.client.channel_layer.group_send(
                    self.group, {"type": ERROR_EVENT, "data": str(exc), "fatal": True}
                )
            else:
                # Never started: its row, opened for it, closes now rather than at the next heartbeat.
                await _close_row(self.capsule.id, self.tag)
                reason = str(exc) if str(exc) == HOST_UNREACHABLE else f"failed to start pty: {exc}"
                await self.audit.failed(trail.TERMINAL_START, reason, tag=self.tag)
                await self.client.fatal(reason)

    async def _deliver(self, event: dict[str, Any]) -> None:
        await self.cursor.output(event["offset"], event["data"])

    async def _started(self, started: pb.PtyStarted) -> None:
        self.attached.set()
        await self.client.send_control("started", tag=started.tag, pid=started.pid)
        await self.roster.open()
        command = " ".join([self._request.cmd, *self._request.args])
        await self.audit.started(started.tag, self._request.owner, command, started.pid, self._detail())
        await self._audit_join()

    async def _exited(self, exit_code: int) -> None:
        await _record_exit(self.capsule.id, self.tag, exit_code)
        await self.roster.ended()
        await self.presence.ended()
        await self.pacer.ended()

    def _progressed(self, offset: int) -> None:
        self.pacer.moved()

    def _read_agent(
        self, offset: int, until: int | None, neutralize_queries: bool
    ) -> AsyncIterator[Chunk | Missed | Ended]:
        stub = aio_stub_for(self.capsule.host_address)
        return read_output(
            stub, self.capsule.id, self.tag, offset, until, neutralize_queries=neutralize_queries
        )

    async def _send_op(self, op: Op) -> None:
        await self.attached.wait()
        if self._agent_stream is None:
            stub = aio_stub_for(self.capsule.host_address)
            self._agent_stream = AgentStream(stub, self.capsule.id, self.tag)
        try:
            await self._agent_stream.send(op)
        except OpFailed as exc:
            verb = {"input": "send input", "resize": "resize", "kill": "kill"}[op.kind]
            await self.client.error(f"failed to {verb}: {exc}")
            if op.kind == "kill":
                await self.audit.failed(trail.TERMINAL_KILL, f"failed to kill: {exc}", tag=self.tag)
        else:
            if op.kind == "kill":
                await self.audit.event(trail.TERMINAL_KILL, tag=self.tag, detail=self._detail())
