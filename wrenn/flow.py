"""Send-side flow control for WebSockets under daphne: the ``wrenn.flow`` ASGI scope extension.

daphne writes every frame an application sends straight into the socket's transport, which
buffers without limit, and tells the application nothing (django/daphne#170). A terminal that
relays a flood to a slow client would grow the worker's memory by whatever the client has not
read yet. Twisted already knows when that buffer is over its limit: a push producer registered
on the transport is paused and resumed. This middleware registers one per WebSocket and puts
it in the scope as ``scope["extensions"]["wrenn.flow"]["window"]``, so a consumer can stop
sending while the client is behind and go on when it has caught up.

How much counts as behind is Twisted's buffer size (64 KiB), in daphne; the kernel's send
buffer comes on top, and Linux grows it to a few MiB for a fast connection. Large kernel
buffers are what let bulk output reach a fast client at full speed (capped, it is several
times slower; figures in docs/performance.md). For a slow client they are seconds of
backlog: it sees a keystroke's effect, and answers daphne's ping, only after reading them,
and a client that needs more than the ping timeout (30 s) is disconnected, then resumes by
offset when it reconnects. WS_SEND_BUFFER, when set, caps both buffers (the kernel doubles
it): 32 KiB keeps a client reading 10 KiB/s within a few seconds of the output, at that cost
in speed.

daphne hands the application ``functools.partial(server.handle_reply, protocol)`` as ``send``;
the protocol (and its transport) is found there. That is a detail of daphne 4 (pinned in
requirements.txt); under another server, or a daphne that changes it, the extension is simply
absent and consumers send without a window (tests/integration/test_flow_control.py, on real
daphne, then fails: the worker's memory outgrows the bound it asserts).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
from collections.abc import Callable
from typing import Any

from autobahn.util import encode_truncate
from django.conf import settings
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

log = logging.getLogger(__name__)

FLOW = "wrenn.flow"
# How long a client may take to read what is queued before a close frame, and answer it.
# autobahn's default, 1 s, aborts the connection under a client still reading the end of a
# flood (which loses the last output and the exit); a dead client is still dropped after this.
CLOSE_HANDSHAKE_TIMEOUT = 30.0


@implementer(IPushProducer)
class SendWindow:
    """Whether the client has taken what was sent: paused while the transport holds more than
    its buffer size (64 KiB in Twisted), resumed once it has written everything out."""

    def __init__(self) -> None:
        self._open = asyncio.Event()
        self._open.set()

    @property
    def writable(self) -> bool:
        return self._open.is_set()

    async def wait(self) -> None:
        await self._open.wait()

    # IPushProducer, called by the transport on daphne's (asyncio) event loop.
    def pauseProducing(self) -> None:  # Twisted's interface names
        self._open.clear()

    def resumeProducing(self) -> None:
        self._open.set()

    def stopProducing(self) -> None:  # the connection is gone: nobody waits for it
        self._open.set()


def _protocol(send: Any) -> Any | None:
    """The Twisted protocol of the WebSocket daphne made ``send`` for, if it is daphne's."""
    if not isinstance(send, functools.partial) or not send.args:
        return None
    protocol = send.args[0]
    transport = getattr(protocol, "transport", None)
    if transport is None or not hasattr(transport, "registerProducer"):
        return None
    return protocol


def attach_window(send: Any) -> SendWindow | None:
    protocol = _protocol(send)
    if protocol is None:
        return None
    protocol.closeHandshakeTimeout = CLOSE_HANDSHAKE_TIMEOUT
    # A frame over daphne's own size limit is answered with a close frame (1009) rather than a
    # dropped connection (1006), so the client learns why.
    protocol.failByDrop = False
    transport = protocol.transport
    size = settings.WS_SEND_BUFFER
    if size > 0:
        transport.bufferSize = size
        handle = transport.getHandle()
        if isinstance(handle, socket.socket):
            handle.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
    window = SendWindow()
    # The HTTP channel that did the upgrade is still registered as the transport's producer.
    if getattr(transport, "producer", None) is not None:
        transport.unregisterProducer()
    transport.registerProducer(window, True)
    return window


class FlowMiddleware:
    """Adds the ``wrenn.flow`` extension to WebSocket scopes (outermost, where daphne's send is)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] == "websocket":
            window = attach_window(send)
            if window is not None:
                extensions = dict(scope.get("extensions") or {})
                extensions[FLOW] = {"window": window, "close": _closer(_protocol(send))}
                scope = dict(scope, extensions=extensions)
        return await self.app(scope, receive, send)


def send_window(scope: dict[str, Any]) -> SendWindow | None:
    flow = (scope.get("extensions") or {}).get(FLOW)
    return flow["window"] if flow else None


Closer = Callable[[int, str], None]


def _closer(protocol: Any) -> Closer:
    """Closes with any code: daphne's own close goes through autobahn's public ``sendClose``,
    which takes only 1000 and 3000-4999 (the browser API's rule) and raises on the others, such
    as 1009 (crossbario/autobahn-python#1642); it also drops the reason."""

    def close(code: int, reason: str) -> None:
        protocol.sendCloseFrame(code=code, reasonUtf8=encode_truncate(reason, 123), isReply=False)

    return close


def close_with(scope: dict[str, Any], code: int, reason: str) -> bool:
    """Closes the WebSocket with ``code`` and ``reason`` where daphne is under it; whether it did."""
    flow = (scope.get("extensions") or {}).get(FLOW)
    if not flow or "close" not in flow:
        return False
    flow["close"](code, reason)
    return True
