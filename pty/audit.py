"""The audit events of terminal sockets: start, join, leave, kill, control, and refusals.

One ``SocketAudit`` per connection knows who (the caller's actor, or anonymous before
authentication), from where (address, Origin, worker) and on what (capsule, team, session tag);
each event is written in the transaction of the change it records, where there is one.
"""

from __future__ import annotations

import logging
from typing import Any

from channels.db import database_sync_to_async
from django.db import transaction

from audit import signins, trail
from capsules.actions import record_terminal_started

log = logging.getLogger(__name__)

# What a refused credential was offered on (`detail["credential"]` of its event).
SOCKET = "terminal_socket"


class SocketAudit:
    def __init__(self, where: trail.Where, capsule_id: str) -> None:
        self.where = where
        self.capsule_id = capsule_id
        self.actor: trail.Actor = trail.ANONYMOUS
        self.team_id: str | None = None
        self._refused: set[tuple[str, str]] = set()

    def _record(
        self,
        action: str,
        *,
        tag: str = "",
        outcome: str = trail.SUCCESS,
        reason: str = "",
        actor: trail.Actor | None = None,
        capsule_id: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        trail.record(
            action,
            actor or self.actor,
            outcome=outcome,
            reason=reason,
            team_id=self.team_id,
            capsule_id=(self.capsule_id if capsule_id is None else capsule_id)[:64],
            session_tag=tag,
            where=self.where,
            detail=detail,
        )

    async def event(self, action: str, **fields: Any) -> None:
        """Records one event of its own (a refusal, a kill, a change of control); never fails
        the socket: a database away is logged."""
        try:
            await database_sync_to_async(self._record)(action, **fields)
        except Exception:
            log.exception("pty %s: recording %s failed", self.capsule_id, action)

    async def failed(self, action: str, reason: str, **fields: Any) -> None:
        await self.event(action, outcome=trail.FAILURE, reason=reason, **fields)

    async def refused(self, action: str, reason: str, **fields: Any) -> None:
        """A refusal a client may repeat at will (an observer's kill, a control frame): recorded
        once per connection, so that nobody, a share link's anonymous holder included, can grow
        the trail without bound. Every repeat is still answered with its error."""
        if (action, reason) in self._refused:
            return
        self._refused.add((action, reason))
        await self.failed(action, reason, **fields)

    async def auth_failed(self, reason: str, actor: trail.Actor | None = None) -> None:
        """A refused credential, within the per-address rate of audit/signins.py."""
        try:
            await database_sync_to_async(signins.refusal)(
                self.where,
                reason,
                SOCKET,
                actor=actor or self.actor,
                team_id=self.team_id,
                capsule_id=self.capsule_id[:64],
            )
        except Exception:
            log.exception("pty %s: recording a refused credential failed", self.capsule_id)

    # --- with the change they record ------------------------------------------------------------

    @database_sync_to_async
    def started(self, tag: str, started_by: str, command: str, pid: int, detail: dict[str, Any]) -> None:
        with transaction.atomic():
            record_terminal_started(self.capsule_id, tag, started_by, command, pid)
            self._record(trail.TERMINAL_START, tag=tag, detail={"command": command, "pid": pid, **detail})
