"""Flow control: the ``wrenn.flow`` send window, and a terminal that follows it (real host agent)."""

from __future__ import annotations

import asyncio
import functools
import socket
from typing import Any

import grpc
import pytest
from channels.testing import WebsocketCommunicator

from capsules.models import Sandbox, TerminalSession
from protos import hostagent_pb2 as pb
from protos import hostagent_pb2_grpc as pb_grpc
from tests.pty.test_consumer import assert_nothing_left
from tests.support.polling import wait_until
from tests.support.terminal import Terminal
from wrenn.asgi import application
from wrenn.flow import CLOSE_HANDSHAKE_TIMEOUT, FLOW, FlowMiddleware, SendWindow, attach_window, send_window

pytestmark = [pytest.mark.timeout(60)]


# --- the window and the middleware, on their own ------------------------------------------


async def test_the_window_opens_and_closes_as_the_transport_says() -> None:
    window = SendWindow()
    assert window.writable
    window.pauseProducing()
    assert not window.writable
    waiting = asyncio.ensure_future(window.wait())
    await asyncio.sleep(0)
    assert not waiting.done()
    window.resumeProducing()
    await asyncio.wait_for(waiting, 1)
    window.pauseProducing()
    window.stopProducing()  # a closed connection never keeps anyone waiting
    assert window.writable


class FakeTransport:
    """Twisted's transport API, as much of it as attach_window uses."""

    def __init__(self) -> None:
        self.producer: Any = object()  # the HTTP channel that did the upgrade
        self.streaming: bool | None = None
        self.bufferSize = 65536
        self.sock = socket.socket()

    def unregisterProducer(self) -> None:
        self.producer = None

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        assert self.producer is None, "Twisted refuses a second producer"
        self.producer, self.streaming = producer, streaming

    def getHandle(self) -> socket.socket:
        return self.sock


class FakeProtocol:
    def __init__(self) -> None:
        self.transport = FakeTransport()
        self.closeHandshakeTimeout = 1.0


async def handle_reply(protocol: Any, message: dict[str, Any]) -> None:
    pass


def test_the_window_replaces_the_upgrade_producer_and_caps_the_buffers(settings: Any) -> None:
    settings.WS_SEND_BUFFER = 16384
    protocol = FakeProtocol()
    window = attach_window(functools.partial(handle_reply, protocol))
    transport = protocol.transport
    assert window is not None
    assert transport.producer is window
    assert transport.streaming is True
    assert transport.bufferSize == 16384
    assert protocol.closeHandshakeTimeout == CLOSE_HANDSHAKE_TIMEOUT  # not autobahn's 1 s
    assert transport.sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) == 2 * 16384  # Linux doubles it
    transport.sock.close()


def test_a_zero_send_buffer_leaves_the_sizes_alone(settings: Any) -> None:
    settings.WS_SEND_BUFFER = 0
    protocol = FakeProtocol()
    before = protocol.transport.sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
    assert attach_window(functools.partial(handle_reply, protocol)) is not None
    assert protocol.transport.bufferSize == 65536
    assert protocol.transport.sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) == before
    protocol.transport.sock.close()


async def test_the_middleware_adds_the_extension_only_where_it_can() -> None:
    seen: list[dict[str, Any]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(scope)

    middleware = FlowMiddleware(app)
    protocol = FakeProtocol()
    daphne_send = functools.partial(handle_reply, protocol)
    await middleware({"type": "websocket", "extensions": {"other": {}}}, None, daphne_send)
    await middleware({"type": "websocket"}, None, handle_reply)  # another server's send
    await middleware({"type": "http"}, None, daphne_send)
    with_window, without, http = seen
    assert send_window(with_window) is protocol.transport.producer
    assert "other" in with_window["extensions"]  # other extensions are kept
    assert send_window(without) is None
    assert FLOW not in http.get("extensions", {})
    protocol.transport.sock.close()


# --- a terminal following the window --------------------------------------------------------


class GivenWindow:
    """Puts a window the test controls where daphne's would be."""

    def __init__(self, app: Any, window: SendWindow) -> None:
        self.app, self.window = app, window

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        scope = dict(scope, extensions={FLOW: {"window": self.window}})
        return await self.app(scope, receive, send)


async def running_session(capsule: Sandbox, tag: str) -> Any | None:
    """The host agent's record of the session while its process runs, or None."""
    assert capsule.host is not None
    async with grpc.aio.insecure_channel(capsule.host.address) as channel:
        reply = await pb_grpc.HostAgentStub(channel).ListPtySessions(pb.ListPtySessionsRequest())
    found = [info for info in reply.sessions if info.tag == tag and not info.exited]
    return found[0] if found else None


async def bytes_written(capsule: Sandbox, tag: str) -> int:
    session = await running_session(capsule, tag)
    assert session is not None, f"{tag} is not running"
    return int(session.bytes_out)


async def terminal_with_window(
    capsule: Sandbox, api_key: str
) -> tuple[SendWindow, WebsocketCommunicator, Terminal]:
    """A terminal socket whose send window the test opens and closes."""
    window = SendWindow()
    communicator = WebsocketCommunicator(
        GivenWindow(application, window),
        f"/v1/capsules/{capsule.id}/pty",
        headers=[(b"x-api-key", api_key.encode())],
    )
    connected, _ = await communicator.connect(timeout=10)
    assert connected
    return window, communicator, Terminal.over_communicator(communicator)


async def test_a_client_that_is_behind_holds_the_writer_then_gets_every_byte(
    transactional_db: None, capsule: Sandbox, api_key: str
) -> None:
    window, communicator, term = await terminal_with_window(capsule, api_key)
    try:
        script = "stty raw -echo; echo READY; read go; seq 1 600000; printf '<END>'"  # 4.5 MB
        tag = (await term.start(cmd="/bin/sh", args=["-c", script]))["tag"]
        await term.read_until(b"READY\n")  # typed before this, "go" would be echoed
        window.pauseProducing()  # the client stops taking anything
        await term.type("go\n")
        # The writer runs until the pipeline is full, then blocks: what it wrote stops growing.
        written, previous = await bytes_written(capsule, tag), -1
        while written != previous:
            await asyncio.sleep(0.5)
            written, previous = await bytes_written(capsule, tag), written
        assert 0 < written < 2_000_000
        assert await communicator.receive_nothing(timeout=0.2)  # nothing relayed while behind
        window.resumeProducing()
        output = await term.read_until(b"<END>", timeout=60)
    finally:
        await communicator.disconnect(timeout=10)
    expected = "".join(f"{n}\n" for n in range(1, 600001)).encode() + b"<END>"
    assert output.split(b"READY\n", 1)[1] == expected
    assert term.missed == []


async def test_an_exit_sent_after_catching_up_still_frees_everything(
    transactional_db: None, capsule: Sandbox, api_key: str
) -> None:
    """The exit reaches a client that was behind once it has caught up; the task that sent it
    then closes the socket, and that must not cut short what the close releases."""
    window, communicator, term = await terminal_with_window(capsule, api_key)
    tag = (await term.start(cmd="/bin/sh", args=["-c", "read go; seq 1 20000; exit 9"]))["tag"]
    window.pauseProducing()
    await term.type("go\n")

    async def process_gone() -> bool:
        return await running_session(capsule, tag) is None

    await wait_until(process_gone, every=0.1)
    window.resumeProducing()
    assert (await term.expect("exit", timeout=30))["exit_code"] == 9
    assert (await communicator.receive_output(timeout=10))["type"] == "websocket.close"
    await communicator.disconnect()
    await assert_nothing_left()
    viewers = (
        await TerminalSession.objects.filter(sandbox_id=capsule.id, tag=tag)
        .values_list("viewers", flat=True)
        .aget()
    )
    assert viewers == 0
