"""`GET /v1/events/stream`: the caller's team's lifecycle events as server-sent events.

An async view, so that the stream is an async generator that daphne sends as events come (a sync
iterator would be read to its end into memory by Django under ASGI). The caller authenticates
exactly as for every other call (X-API-Key or Bearer, capsules/api/authentication.py); the
credentials are checked again at each keepalive, so that a revoked key or an expired token ends
the stream. The stream subscribes its own channel to the team's group (capsules/live.py) before it
sends `connected`, so nothing published after `connected` is missed, and unsubscribes when the
client goes away (Django cancels the generator) or the stream ends.
"""

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from asgiref.sync import sync_to_async
from channels.layers import BaseChannelLayer, get_channel_layer
from django.conf import settings
from django.http import HttpRequest, HttpResponseBase, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework import status
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.request import Request

from capsules import live
from capsules.api.authentication import (
    MISSING_CREDENTIALS,
    OBSERVE_ONLY,
    WWW_AUTHENTICATE,
    TeamContext,
    scope_allows,
)
from capsules.api.base import TeamAPIView
from capsules.api.errors import error_body

log = logging.getLogger(__name__)

# Events held for a client that reads slower than they come; past this the stream ends with a
# comment saying so, and the client reconnects (events are notifications, not a log to replay).
MAX_PENDING = 1000
# How often a stream joins its team's group again: the Redis layers forget a group's members
# after a day (group_expiry), and a stream may stay open longer.
REJOIN_EVERY_SEC = 3600.0
KEEPALIVE = b": keepalive\n\n"
OVERFLOW = b": too many events pending; reconnect\n\n"
CREDENTIALS_ENDED = b": credentials no longer valid\n\n"


def authenticate(request: HttpRequest) -> TeamContext | None:
    """The caller's team, by the API's own authenticators in their order; None without
    credentials; AuthenticationFailed for credentials offered and refused. Blocking."""
    drf_request = Request(request)
    for authenticator in TeamAPIView.authentication_classes:
        result = authenticator().authenticate(drf_request)
        if result is not None:
            context: TeamContext = result[1]
            return context
    return None


def _unauthorized(message: str) -> JsonResponse:
    response = JsonResponse(error_body("unauthorized", message), status=status.HTTP_401_UNAUTHORIZED)
    response["WWW-Authenticate"] = WWW_AUTHENTICATE
    return response


def sse_frame(kind: str, data: str) -> bytes:
    """One event: its kind on the `event:` line, its JSON body (one line) on `data:`."""
    return f"event: {kind}\ndata: {data}\n\n".encode()


async def _still_allowed(request: HttpRequest, team_id: Any) -> bool:
    try:
        context = await sync_to_async(authenticate)(request)
    except AuthenticationFailed:
        return False
    return context is not None and context.team.pk == team_id


async def _receive(
    layer: BaseChannelLayer, channel: str, pending: "asyncio.Queue[dict[str, Any] | None]"
) -> None:
    """Move the channel's messages into `pending`; a None there ends the stream (too many held).

    A task of its own rather than a receive() cancelled at each keepalive: the list-based Redis
    layer loses a message when a receive() is cancelled at the wrong moment."""
    while True:
        message = await layer.receive(channel)
        if pending.qsize() >= MAX_PENDING:
            pending.put_nowait(None)
            return
        if message.get("type") == live.TEAM_EVENT:
            pending.put_nowait(message)


async def events(request: HttpRequest, team_id: Any) -> AsyncIterator[bytes]:
    layer = get_channel_layer()
    assert layer is not None  # noqa: S101 - settings always configure one
    channel = await layer.new_channel()
    group = live.team_group(team_id)
    await layer.group_add(group, channel)
    pending: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
    receiver = asyncio.create_task(_receive(layer, channel, pending), name=f"events {channel}")
    keepalive = float(settings.WRENN_EVENTS_KEEPALIVE_SEC)
    loop = asyncio.get_running_loop()
    joined = loop.time()
    try:
        yield sse_frame(live.CONNECTED, live.encode(live.event_body(live.CONNECTED)))
        while True:
            try:
                message = await asyncio.wait_for(pending.get(), keepalive)
            except TimeoutError:
                if not await _still_allowed(request, team_id):
                    yield CREDENTIALS_ENDED
                    return
                if loop.time() - joined > REJOIN_EVERY_SEC:
                    await layer.group_add(group, channel)
                    joined = loop.time()
                yield KEEPALIVE
                continue
            if message is None:
                log.warning(
                    "event stream of team %s ended: more than %d events pending", team_id, MAX_PENDING
                )
                yield OVERFLOW
                return
            yield sse_frame(message["event"], message["data"])
    finally:
        receiver.cancel()
        await asyncio.gather(receiver, return_exceptions=True)
        await layer.group_discard(group, channel)


@csrf_exempt
async def event_stream(request: HttpRequest) -> HttpResponseBase:
    """The view of /v1/events/stream (documented in capsules/api/schema.py's `add_event_stream`)."""
    if request.method != "GET":
        body = error_body("method_not_allowed", f'Method "{request.method}" not allowed.')
        response = JsonResponse(body, status=status.HTTP_405_METHOD_NOT_ALLOWED)
        response["Allow"] = "GET"
        return response
    try:
        context = await sync_to_async(authenticate)(request)
    except AuthenticationFailed as exc:
        return _unauthorized(str(exc.detail))
    if context is None:
        return _unauthorized(MISSING_CREDENTIALS)
    if not scope_allows(context, "GET", None):
        return JsonResponse(error_body("forbidden", OBSERVE_ONLY), status=status.HTTP_403_FORBIDDEN)
    stream = StreamingHttpResponse(events(request, context.team.pk), content_type="text/event-stream")
    stream["Cache-Control"] = "no-cache"
    # nginx and similar proxies would otherwise hold events back in their buffers.
    stream["X-Accel-Buffering"] = "no"
    return stream
