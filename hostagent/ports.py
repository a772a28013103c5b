"""Connections into a TCP port of a capsule's own network namespace, for previews (PortForward).

setns(2) moves only the calling thread, and a socket keeps the namespace it was created in
whichever thread uses it later: so a short-lived thread of its own enters the capsule's namespace,
creates the socket and ends, and the event loop connects and relays with it. Never a thread of
the shared executor: one left inside a capsule's namespace by a failed setns back would then run
the agent's other work (its listeners, its health checks) in the capsule's network.

Only runtimes with a network namespace per capsule can do this; under `process` and `bwrap` a
capsule's "loopback" is the host's, where PostgreSQL, Redis, daphne and this agent listen, so
those runtimes refuse (`hostagent.runtime.Runtime.port_socket`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import logging
import os
import socket
import threading
from collections.abc import AsyncIterator
from typing import Any

import grpc

from hostagent.blocking import run_blocking
from hostagent.errors import AgentError, InvalidArgument
from protos import hostagent_pb2 as pb
from protos import rules

log = logging.getLogger(__name__)

CLONE_NEWNET = 0x40000000
MAX_PORT = 65535
# One read of the capsule's server at most this big, so one gRPC message each way is in flight.
CHUNK = 64 * 1024
CONNECT_TIMEOUT = 10.0
REFUSED_KEY = rules.PORT_REFUSED_KEY

_libc = ctypes.CDLL(None, use_errno=True)


class PortUnavailable(AgentError):
    """Nothing accepted the connection on the capsule's port."""

    code = grpc.StatusCode.UNAVAILABLE


class CallerGone(Exception):
    """The control plane ended the call (its client left): nobody is left to answer."""


def validate_port(port: int) -> int:
    if not 1 <= port <= MAX_PORT:
        raise InvalidArgument(f"port must be between 1 and {MAX_PORT}, got {port}")
    return port


def socket_in_namespace(netns: str) -> socket.socket:
    """A TCP socket created in the network namespace at `netns` (e.g. /proc/<pid>/ns/net). Blocking."""
    made: list[socket.socket] = []
    failed: list[BaseException] = []

    def enter_and_create() -> None:
        try:
            fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    code = ctypes.get_errno()
                    raise OSError(code, f"setns({netns}): {os.strerror(code)}")
            finally:
                os.close(fd)
            made.append(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
        except BaseException as exc:  # handed to the caller's thread
            failed.append(exc)

    # The thread ends inside the namespace: it is never reused, so nothing else runs there.
    thread = threading.Thread(target=enter_and_create, name="preview-netns", daemon=True)
    thread.start()
    thread.join()
    if failed:
        raise failed[0]
    return made[0]


async def connect(sock: socket.socket, sandbox_id: str, port: int) -> None:
    """Connect `sock` to 127.0.0.1:`port` (the capsule's loopback, by the socket's namespace)."""
    sock.setblocking(False)
    try:
        await asyncio.wait_for(
            asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port)), CONNECT_TIMEOUT
        )
    except TimeoutError:
        sock.close()
        raise PortUnavailable(
            f"port {port} of capsule {sandbox_id} did not accept a connection within {CONNECT_TIMEOUT:.0f}s"
        ) from None
    except OSError as exc:
        sock.close()
        if exc.errno == errno.ECONNREFUSED:
            raise PortUnavailable(
                f"nothing is listening on port {port} of capsule {sandbox_id} (connection refused)"
            ) from None
        raise PortUnavailable(
            f"cannot connect to port {port} of capsule {sandbox_id}: {exc.strerror}"
        ) from None


async def open_port(
    netns: str, sandbox_id: str, port: int
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A stream connected to 127.0.0.1:`port` inside the network namespace at `netns`."""
    try:
        sock = await run_blocking(socket_in_namespace, netns)
    except OSError as exc:
        raise AgentError(f"cannot enter the network of capsule {sandbox_id}: {exc}") from exc
    await connect(sock, sandbox_id, port)
    return await asyncio.open_connection(sock=sock, limit=CHUNK)


async def _nothing() -> AsyncIterator[pb.PortForwardRequest]:
    return
    yield  # an async generator that yields nothing


async def relay(
    requests: AsyncIterator[pb.PortForwardRequest],
    context: grpc.aio.ServicerContext[Any, Any],
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    what: str,
    write_closed: bool = False,
) -> None:
    """Bytes both ways until each direction is closed; one chunk in flight each way.

    `what` names the port in errors ("port 3000 of capsule cl-…"); `write_closed`: the caller
    half-closed in its first request already.
    """

    async def to_capsule() -> None:
        async for request in requests if not write_closed else _nothing():
            if request.data:
                writer.write(request.data)
                await writer.drain()  # the capsule's server reads slower: the caller waits
            if request.close_write:
                break
        # The caller's end (close_write, or its half-close of the stream) is the server's EOF.
        with contextlib.suppress(OSError):
            if writer.can_write_eof():
                writer.write_eof()

    async def send(response: pb.PortForwardResponse) -> None:
        try:
            await context.write(response)
        except Exception as exc:
            # A write fails with gRPC's own (private) error once the caller cancelled the call.
            raise CallerGone from exc

    async def from_capsule() -> None:
        while data := await reader.read(CHUNK):
            await send(pb.PortForwardResponse(data=data))
        await send(pb.PortForwardResponse(eof=True))

    reset = False
    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(to_capsule())
            group.create_task(from_capsule())
    except* ConnectionError:
        reset = True
    except* CallerGone:
        log.debug("the caller left the preview connection to %s", what)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    if reset:
        raise PortUnavailable(f"the server on {what} reset the connection")
