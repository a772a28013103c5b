"""File transfers under daphne with bounded memory: upload bodies the view reads a chunk at a time
(the ``wrenn.body`` scope extension) and download responses paced by the client (``wrenn.window``).

A 200 MB upload through the default path would sit in memory twice over. daphne (Twisted)
receives the whole body into a temporary file, then queues all of it for the application at
once, in memory (``daphne.http_protocol.WebRequest.process``: ``put_nowait`` of every chunk
before the application runs); Django then copies it into its own spooled file before the view
runs. For the upload routes (`files/write`, `files/stream/write`) this wrapper takes the body
before that happens and puts a `Body` in the scope instead; the view reads it as it forwards it
to the host agent (capsules/multipart.py parses it on the way), so memory holds about one chunk.

Downloads (`files/read`, `files/stream/read`) have the opposite problem: daphne writes each
response chunk into Twisted's transport, which buffers without limit, so a client slower than
the agent would let the whole file pile up in the worker. The wrapper registers a push producer
on the request (as wrenn/flow.py does for WebSockets) and puts it in the scope: the view's
response waits while Twisted's buffer is over its size (64 KiB), then goes on.

Before any of that, Twisted itself parses every POST whose body is multipart/form-data into
``request.args``, all of it in memory with the email package (``twisted.web.http.Request.
requestReceived``): a 200 MB upload grew the worker by 2.4 GB, and a malformed one was answered
400 before the application saw it. daphne never reads ``request.args``; `stop_form_parsing()`
turns that parsing off for daphne's requests (wrenn/asgi.py calls it as the application loads).

Under daphne the body is the temporary file Twisted wrote: the wrapper finds it through the
`send` daphne made (``functools.partial(server.handle_reply, protocol)``, as wrenn/flow.py does)
and leaves daphne an empty one to queue. That is why `__call__` is synchronous: daphne calls the
application and queues the body in one go, so the file must be taken during the call itself.
Under another ASGI server the body is read from `receive` as it arrives, and Django is handed an
empty body. Either way Django never parses it: the views read only `wrenn.body`.
"""

from __future__ import annotations

import asyncio
import functools
import io
import re
from collections.abc import Awaitable, Callable
from typing import Any, BinaryIO

from wrenn.flow import SendWindow

BODY = "wrenn.body"
WINDOW = "wrenn.window"
# The routes whose bodies the view streams itself, and those whose responses are paced (both
# prefixes, as capsules/urls.py mounts them).
UPLOAD_PATH = re.compile(r"^(?:/api)?/v1/capsules/[^/]+/files/(?:stream/)?write/?$")
DOWNLOAD_PATH = re.compile(
    r"^(?:/api)?/v1/capsules/[^/]+/(?:files/(?:stream/)?read|recordings/[^/]+(?:/text)?)/?$"
)
EMPTY_BODY = {"type": "http.request", "body": b"", "more_body": False}

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class Body:
    """The request body, read in chunks: `await read(n)` gives at most n bytes, b"" at the end."""

    async def read(self, size: int) -> bytes:
        raise NotImplementedError

    def close(self) -> None:
        return


class FileBody(Body):
    """The temporary file daphne (Twisted) received the body into."""

    def __init__(self, file: BinaryIO) -> None:
        self._file = file

    async def read(self, size: int) -> bytes:
        # A local disk read: in a thread, so a slow disk does not stall the event loop.
        return await asyncio.to_thread(self._file.read, size)

    def close(self) -> None:
        self._file.close()


class ReceiveBody(Body):
    """The body as an ASGI server hands it over, message by message."""

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._pending = b""
        self._ended = False

    async def read(self, size: int) -> bytes:
        while not self._pending and not self._ended:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                raise ConnectionError("the client went away during the upload")
            self._pending = message.get("body", b"")
            self._ended = not message.get("more_body", False)
        data, self._pending = self._pending[:size], self._pending[size:]
        return data


def _daphne_body(send: Send) -> BinaryIO | None:
    """Takes the body file from daphne's request, leaving it an empty one; None elsewhere."""
    if not isinstance(send, functools.partial) or not send.args:
        return None
    protocol = send.args[0]
    content = getattr(protocol, "content", None)
    if content is None or not hasattr(content, "read") or getattr(content, "closed", True):
        return None
    protocol.content = io.BytesIO()
    return content


class ResponseWindow:
    """Whether the client has taken what was sent (a push producer on daphne's request)."""

    def __init__(self, request: Any) -> None:
        self._request = request
        self._window = SendWindow()
        request.registerProducer(self._window, True)

    async def wait(self) -> None:
        await self._window.wait()

    def release(self) -> None:
        """Before the response's last message: the connection's next request needs the slot."""
        if self._request.producer is self._window:
            self._request.unregisterProducer()


def _response_window(send: Send) -> ResponseWindow | None:
    if not isinstance(send, functools.partial) or not send.args:
        return None
    request = send.args[0]
    channel = getattr(request, "channel", None)
    # One producer per request; a channel already holding one (never expected) goes unpaced.
    if channel is None or not hasattr(request, "registerProducer") or getattr(request, "producer", None):
        return None
    if getattr(channel, "_requestProducer", None) is not None:
        return None
    return ResponseWindow(request)


class Transfers:
    """ASGI wrapper, outermost: upload routes get `wrenn.body`, download routes `wrenn.window`."""

    # asgiref (and so daphne) takes an object whose __call__ is not a coroutine function for an
    # ASGI 2 application; this one is ASGI 3, synchronous only to act during daphne's call.
    _asgi_single_callable = True

    def __init__(self, app: ASGIApp, passes: Callable[[Scope], bool] | None = None) -> None:
        self.app = app
        # Requests to hand on untouched, whatever their path (previews: the capsule's own).
        self.passes = passes

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        if scope["type"] != "http" or scope.get("method") != "POST":
            return self.app(scope, receive, send)
        if self.passes is not None and self.passes(scope):
            return self.app(scope, receive, send)
        if DOWNLOAD_PATH.match(scope["path"]):
            window = _response_window(send)
            if window is None:
                return self.app(scope, receive, send)
            scope = {**scope, "extensions": {**(scope.get("extensions") or {}), WINDOW: window}}
            return self._run(window.release, self.app(scope, receive, send))
        if not UPLOAD_PATH.match(scope["path"]):
            return self.app(scope, receive, send)
        taken = _daphne_body(send)
        body: Body
        if taken is not None:
            body = FileBody(taken)
        else:
            body = ReceiveBody(receive)
            receive = _empty_body()
        scope = {**scope, "extensions": {**(scope.get("extensions") or {}), BODY: body}}
        # Closing the body frees the temporary file's disk at once.
        return self._run(body.close, self.app(scope, receive, send))

    @staticmethod
    async def _run(cleanup: Callable[[], None], app: Awaitable[None]) -> None:
        try:
            await app
        finally:
            cleanup()


def body_of(scope: Scope) -> Body | None:
    return (scope.get("extensions") or {}).get(BODY)


def window_of(scope: Scope) -> ResponseWindow | None:
    return (scope.get("extensions") or {}).get(WINDOW)


def _empty_body() -> Receive:
    """What Django reads instead of the body: nothing, then (its disconnect listener) no news."""
    given = False

    async def receive() -> dict[str, Any]:
        nonlocal given
        if not given:
            given = True
            return EMPTY_BODY
        await asyncio.Event().wait()  # cancelled when the response is done
        return {"type": "http.disconnect"}

    return receive


def stop_form_parsing() -> None:
    """daphne's requests skip Twisted's in-memory parsing of form bodies (see the module's doc).

    Twisted sets the switch per request in `Request.__init__` (`parsePOSTFormSubmission`), which
    daphne calls with the default, on; so daphne's request class is made to turn it off after.
    Idempotent; without daphne installed, nothing to do.
    """
    try:
        from daphne.http_protocol import WebRequest
    except ImportError:
        return
    if getattr(WebRequest, "_wrenn_form_parsing_off", False):
        return
    original = WebRequest.__init__

    @functools.wraps(original)
    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self._parsePOSTFormSubmission = False

    WebRequest.__init__ = init
    WebRequest._wrenn_form_parsing_off = True
