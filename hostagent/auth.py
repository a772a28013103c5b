"""Shared-token authentication of every RPC.

Capsules share the host's network, so a process inside one can reach the
agent's port; without this check it could attach to another capsule's
terminal. The control plane sends ``authorization: Bearer <token>``.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

METADATA_KEY = "authorization"


def _denied(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    async def abort(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong host-agent token")

    async def abort_after_first(
        requests: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]
    ) -> None:
        # Refused before its first message, a client writing to the stream gets a failed write
        # ("Internal error from Core") instead of this status; so the first one is taken.
        async for _ in requests:
            break
        await abort(None, context)

    kwargs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    # A handler of the method's own kind: the refusal reads the request the way the client sends it.
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(abort_after_first, **kwargs)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(abort_after_first, **kwargs)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(abort, **kwargs)
    return grpc.unary_unary_rpc_method_handler(abort, **kwargs)


class TokenInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        offered = dict(handler_call_details.invocation_metadata or ()).get(METADATA_KEY, "")
        if handler is not None and not hmac.compare_digest(str(offered).encode(), self._expected):
            return _denied(handler)
        return handler
