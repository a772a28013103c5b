"""The terminal WebSocket: adapts Channels to a ``Connection`` (pty/connection.py).

Everything a terminal socket does is in the connection (its dialect, credentials and deadlines)
and the viewer it becomes (pty/viewer.py: output cursor, input, presence, pacing and the lead);
this consumer only hands them the socket's frames and the session group's events, and gives
them a way to send and to close.
"""

from __future__ import annotations

import logging
from typing import Any

from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer

from audit.trail import where_from_scope
from wrenn.flow import close_with, send_window

from .auth import SCOPE_AUTH_ACTOR, SCOPE_AUTH_ERROR, SCOPE_CALLER
from .connection import Connection
from .dialects import Frame
from .viewer import Viewer

log = logging.getLogger(__name__)


class PtyConsumer(AsyncWebsocketConsumer):
    # True on /v1/admin/capsules/<id>/pty: staff only, any team's capsule.
    admin = False

    async def connect(self) -> None:
        self.connection = Connection(
            self,
            self.scope["url_route"]["kwargs"]["capsule_id"],
            admin=self.admin,
            window=send_window(self.scope),
            subprotocols=list(self.scope.get("subprotocols", [])),
            query_string=self.scope.get("query_string", b""),
            where=where_from_scope(self.scope),
        )
        await self.connection.opened(
            self.scope.get(SCOPE_CALLER), self.scope.get(SCOPE_AUTH_ERROR), self.scope.get(SCOPE_AUTH_ACTOR)
        )

    async def dispatch(self, message: dict[str, Any]) -> None:
        """As Channels', without closing stale database connections before every message (a
        thread hop each, on the path of every keystroke and output message). The database is only
        reached through database_sync_to_async, which does that itself around each call."""
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        try:
            await handler(message)
        except StopConsumer:
            raise
        except Exception:
            # A bug, not the client's doing: logged once, and the client told, not left hanging.
            log.exception("pty %s: %s failed", self.scope.get("path", ""), message["type"])
            await self.connection.error("internal error", fatal=True)
            await self.connection.close(1011, "internal error")

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        # However the consumer ends (a handler's exception ends it without a disconnect), the
        # connection's tasks end with it.
        try:
            await super().__call__(scope, receive, send)
        finally:
            connection: Connection | None = getattr(self, "connection", None)
            if connection is not None:
                await connection.closed()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data is None:
            await self.connection.binary(bytes_data or b"")
        else:
            await self.connection.text(text_data)

    async def disconnect(self, code: int) -> None:
        await self.connection.closed()

    # --- connection.Socket ----------------------------------------------------------------------

    async def close(self, code: int | bool | None = None, reason: str | None = None) -> None:
        # Channels' close goes through daphne's, which refuses protocol codes such as 1009:
        # those go straight to the WebSocket where daphne is under it.
        protocol_code = isinstance(code, int) and not isinstance(code, bool) and code != 1000 and code < 3000
        if not (protocol_code and close_with(self.scope, int(code or 0), reason or "")):
            await super().close(code=code, reason=reason)

    async def send_frame(self, frame: Frame) -> None:
        if isinstance(frame, bytes):
            await self.send(bytes_data=frame)
        else:
            await self.send(text_data=frame)

    # --- the session group's events -------------------------------------------------------------

    @property
    def _viewer(self) -> Viewer | None:
        return self.connection.viewer

    async def terminal_output(self, event: dict[str, Any]) -> None:
        if self._viewer is not None:
            await self._viewer.output(event["offset"], event["data"])

    async def terminal_mark(self, event: dict[str, Any]) -> None:
        if self._viewer is not None:
            self._viewer.mark(event["offset"])

    async def terminal_exit(self, event: dict[str, Any]) -> None:
        if self._viewer is not None:
            await self._viewer.exit(event["offset"], event["exit_code"])

    async def terminal_progress(self, event: dict[str, Any]) -> None:
        if self._viewer is not None:
            self._viewer.progress_asked()

    async def terminal_joined(self, event: dict[str, Any]) -> None:
        if self._viewer is not None:
            self._viewer.someone_joined()

    async def terminal_viewers(self, event: dict[str, Any]) -> None:
        if self._viewer is not None:
            await self._viewer.roster.changed()

    async def terminal_control(self, event: dict[str, Any]) -> None:
        await self.connection.controlled(event["viewer"], event["mode"])

    async def terminal_share_revoked(self, event: dict[str, Any]) -> None:
        await self.connection.share_revoked(event["share"])

    async def terminal_error(self, event: dict[str, Any]) -> None:
        await self.connection.error(event["data"], fatal=event["fatal"])
        if event["fatal"]:
            await self.connection.close(1000)


class AdminPtyConsumer(PtyConsumer):
    admin = True
