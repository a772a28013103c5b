"""The ASGI layer in front of the application: a request whose host names a preview
(`{port}-{capsule_id}.{WRENN_PREVIEW_DOMAIN}`) is answered here, through the capsule's host agent;
any other host goes to the application unchanged.
"""

from __future__ import annotations

import logging
from typing import Any

from channels.db import database_sync_to_async

from previews.access import Access, Denied, authorize, headers_of
from previews.hosts import BadPreviewHost, PreviewTarget, request_host, target_of
from previews.http import exchange_link, proxy_http
from previews.responses import refuse_websocket, send_error
from previews.websocket import proxy_websocket

log = logging.getLogger(__name__)

Scope = dict[str, Any]
authorize_async = database_sync_to_async(authorize)


def preview_target(scope: Scope) -> PreviewTarget | None:
    """The preview the request is for; None for the application's own hosts."""
    host = request_host(scope)
    return target_of(host) if host else None


def for_previews(scope: Scope) -> bool:
    """Whether the request is for a preview host (a malformed one included): wrenn/transfers.py
    leaves its body alone, whatever its path, since it is the capsule's."""
    try:
        return preview_target(scope) is not None
    except BadPreviewHost:
        return True


class PreviewMiddleware:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> Any:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        try:
            target = preview_target(scope)
        except BadPreviewHost as exc:
            await self._refuse(scope, receive, send, Denied(400, "invalid_request", str(exc)))
            return None
        if target is None:
            return await self.app(scope, receive, send)
        if scope["type"] == "http":
            await self._http(scope, receive, send, target)
        else:
            await self._websocket(scope, receive, send, target)
        return None

    async def _refuse(self, scope: Scope, receive: Any, send: Any, denied: Denied) -> None:
        if scope["type"] == "http":
            await send_error(send, denied, headers_of(scope))
        elif (await receive())["type"] == "websocket.connect":
            await refuse_websocket(send, denied)

    async def _http(self, scope: Scope, receive: Any, send: Any, target: PreviewTarget) -> None:
        try:
            access: Access = await authorize_async(scope, target)
        except Denied as denied:
            await send_error(send, denied, headers_of(scope))
            return
        if access.link_token is not None and scope["method"] in ("GET", "HEAD"):
            await exchange_link(scope, send, access, target)
            return
        await proxy_http(scope, receive, send, access)

    async def _websocket(self, scope: Scope, receive: Any, send: Any, target: PreviewTarget) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        try:
            access = await authorize_async(scope, target)
        except Denied as denied:
            await refuse_websocket(send, denied)
            return

        async def recheck() -> Denied | None:
            try:
                await authorize_async(scope, target)
            except Denied as denied:
                return denied
            return None

        await proxy_websocket(scope, receive, send, access, target, recheck)
