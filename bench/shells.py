"""One terminal session as a client sees it, over each server's protocol (or none, for the floor).

Every kind offers the same three calls: ``write(bytes)``, ``read() -> bytes`` (the next piece of
output, whatever its framing) and ``close()``; the workloads only use those.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
from typing import Any, Protocol

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from pty.dialects import JSON_SUBPROTOCOL
from pty.protocol import BINARY_HEADER, BINARY_SUBPROTOCOL


class MissedBytes(Exception):
    """The server said bytes are lost to this viewer (they left its replay buffer)."""


class Shell(Protocol):
    async def write(self, data: bytes) -> None: ...
    async def read(self) -> bytes: ...
    async def close(self) -> None: ...


class Output:
    """What a shell printed so far, read piece by piece until a marker appears."""

    def __init__(self, shell: Shell) -> None:
        self.shell = shell
        self.tail = b""
        self.count = 0

    async def until(self, marker: bytes) -> int:
        """Reads until ``marker`` has arrived; returns how many bytes that took."""
        start = self.count
        while True:
            index = self.tail.find(marker)
            if index >= 0:
                self.tail = self.tail[index + len(marker) :]
                return self.count - start
            piece = await self.shell.read()
            self.count += len(piece)
            self.tail = self.tail[-len(marker) :] + piece


class LocalPty:
    """The floor: a shell on a PTY of this process, read directly."""

    def __init__(self, argv: list[str]) -> None:
        self.master, slave = os.openpty()
        self.pid = os.fork()
        if self.pid == 0:  # the child: the terminal becomes its controlling one
            os.close(self.master)
            os.login_tty(slave)
            os.execvp(argv[0], argv)
        os.close(slave)
        os.set_blocking(self.master, False)
        self._loop = asyncio.get_running_loop()
        self._ready = asyncio.Event()
        self._loop.add_reader(self.master, self._ready.set)

    async def write(self, data: bytes) -> None:
        os.write(self.master, data)

    async def read(self) -> bytes:
        while True:
            try:
                data = os.read(self.master, 65536)
            except BlockingIOError:
                self._ready.clear()
                await self._ready.wait()
                continue
            if not data:
                raise EOFError("the shell closed its terminal")
            return data

    async def close(self) -> None:
        self._loop.remove_reader(self.master)
        os.close(self.master)
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        await asyncio.to_thread(os.waitpid, self.pid, 0)


class WrennShell:
    """A session over this project's protocol: JSON frames, output in base64; or, with
    ``binary``, the binary extension (output and input as raw bytes in binary frames)."""

    def __init__(self, websocket: ClientConnection, binary: bool) -> None:
        self.websocket = websocket
        self.binary = binary
        self.tag = ""

    @classmethod
    async def open_socket(cls, url: str, api_key: str, binary: bool) -> WrennShell:
        # A stated dialect: the server never waits to recognise it (pty/dialects.py).
        protocols = [BINARY_SUBPROTOCOL] if binary else [JSON_SUBPROTOCOL]
        return cls(await _connect(url, [("X-API-Key", api_key)], protocols), binary)

    @classmethod
    async def start(cls, url: str, api_key: str, argv: list[str], binary: bool) -> WrennShell:
        shell = await cls.open_socket(url, api_key, binary)
        await shell._send(type="start", cmd=argv[0], args=argv[1:], cols=127, rows=40)
        while True:
            frame = await shell._frame()
            if frame["type"] == "started":
                shell.tag = frame["tag"]
                return shell
            if frame["type"] == "error":
                raise RuntimeError(f"start failed: {frame['data']}")

    @classmethod
    async def join(cls, url: str, api_key: str, tag: str, binary: bool) -> WrennShell:
        """Another viewer of a running session, from the bytes written after it joined."""
        shell = await cls.open_socket(url, api_key, binary)
        shell.tag = tag
        # The offset of the end of the output so far is not known here: replay from the buffer
        # start would count old bytes, so viewers join before the workload writes anything.
        await shell._send(type="connect", tag=tag, offset=0)
        return shell

    async def _send(self, **message: Any) -> None:
        await self.websocket.send(json.dumps(message))

    async def _frame(self) -> dict[str, Any]:
        message = await self.websocket.recv()
        if isinstance(message, bytes):  # binary output: the offset, then the bytes
            return {"type": "output", "raw": message[BINARY_HEADER.size :]}
        frame: dict[str, Any] = json.loads(message)
        return frame

    async def write(self, data: bytes) -> None:
        if self.binary:
            await self.websocket.send(data)
        else:
            await self._send(type="input", data=base64.b64encode(data).decode("ascii"))

    async def read(self) -> bytes:
        while True:
            frame = await self._frame()
            kind = frame["type"]
            if "raw" in frame:
                raw: bytes = frame["raw"]
                return raw
            if kind == "output":
                return base64.b64decode(frame["data"])
            if kind == "ping":
                await self._send(type="pong")
            elif kind == "missed":
                raise MissedBytes(f"the server skipped {frame['bytes']} bytes")
            elif kind in ("exit", "error"):
                raise EOFError(f"session ended: {frame}")

    async def close(self) -> None:
        with contextlib.suppress(ConnectionClosed):  # the session may have ended already
            await self._send(type="kill")
        await self.websocket.close()


class TerminadoShell:
    """A session over terminado's protocol: JSON arrays, output as text."""

    def __init__(self, websocket: ClientConnection) -> None:
        self.websocket = websocket

    @classmethod
    async def start(cls, url: str) -> TerminadoShell:
        shell = cls(await _connect(url, []))
        await shell.websocket.send(json.dumps(["set_size", 40, 127]))
        return shell

    async def write(self, data: bytes) -> None:
        await self.websocket.send(json.dumps(["stdin", data.decode("utf-8")]))

    async def read(self) -> bytes:
        while True:
            message = json.loads(await self.websocket.recv())
            if message[0] == "stdout":
                return str(message[1]).encode("utf-8")
            if message[0] == "disconnect":
                raise EOFError("terminado closed the terminal")

    async def close(self) -> None:
        await self.websocket.close()


async def _connect(
    url: str, headers: list[tuple[str, str]], protocols: list[str] | None = None
) -> ClientConnection:
    # No client pings (the servers ping), no size limit, and a deep queue: the client must
    # never be what holds a server back.
    return await connect(
        url,
        additional_headers=headers,
        subprotocols=[Subprotocol(name) for name in protocols or []] or None,
        max_size=None,
        max_queue=None,
        ping_interval=None,
        open_timeout=60,
    )
