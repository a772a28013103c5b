"""A test client of the terminal protocol, over an in-process communicator or a real socket."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable
from typing import Any

from websockets.typing import Subprotocol

from pty.dialects import JSON_SUBPROTOCOL
from pty.protocol import BINARY_HEADER

# The JSON dialect with extensions, stated: what tests over real sockets ask for by default.
JSON_DIALECT = [Subprotocol(JSON_SUBPROTOCOL)]

SendText = Callable[[str], Awaitable[None]]
SendBytes = Callable[[bytes], Awaitable[None]]
RecvText = Callable[[float], Awaitable[str | bytes]]


class Terminal:
    """``binary``: the server was asked for the binary extension; output frames are then binary
    (turned into the same dicts as JSON ones, with ``data`` as bytes) and ``type`` sends binary."""

    def __init__(self, send_text: SendText, recv_text: RecvText, send_bytes: SendBytes | None = None) -> None:
        self._send_text = send_text
        self._recv_text = recv_text
        self._send_bytes = send_bytes
        self.binary = False
        # ``raw``: the raw dialect (wrenn SDK 0.3): output frames are binary, the bytes alone.
        self.raw = False
        self.binary_frames = 0
        self.kinds: set[str] = set()  # every frame type received
        self.output = bytearray()
        self.communicator: Any = None
        # The offset the next output frame must carry: every frame is checked, so a
        # lost, repeated or reordered byte fails the test that reads it.
        self.next_offset: int | None = None
        self.missed: list[dict[str, Any]] = []
        # Every `viewers` frame (the roster extension), in order; `recv` passes over them as it
        # does pings, so a test of anything else never meets one.
        self.rosters: list[dict[str, Any]] = []

    @classmethod
    def over_communicator(cls, communicator: Any) -> Terminal:
        async def recv(timeout: float) -> str | bytes:
            message: str | bytes = await communicator.receive_from(timeout=timeout)
            return message

        terminal = cls(
            lambda text: communicator.send_to(text_data=text),
            recv,
            lambda data: communicator.send_to(bytes_data=data),
        )
        terminal.communicator = communicator
        return terminal

    @classmethod
    def over_websocket(cls, websocket: Any) -> Terminal:
        async def recv(timeout: float) -> str | bytes:
            message: str | bytes = await asyncio.wait_for(websocket.recv(), timeout)
            return message

        return cls(websocket.send, recv, websocket.send)

    async def send(self, **message: Any) -> None:
        await self._send_text(json.dumps(message))

    async def recv(self, timeout: float = 20, *, rosters: bool = False) -> dict[str, Any]:
        """The next frame that is not a keepalive ping (nor a `viewers` frame, unless ``rosters``);
        output is also kept in ``self.output``."""
        while True:
            message = await self._recv_text(timeout)
            frame: dict[str, Any]
            if isinstance(message, bytes):
                assert self.binary or self.raw, "a binary frame without a binary dialect"
                self.binary_frames += 1
                if self.raw:
                    frame = {"type": "output", "data": message}
                else:
                    (offset,) = BINARY_HEADER.unpack_from(message)
                    frame = {"type": "output", "offset": offset, "data": message[BINARY_HEADER.size :]}
            else:
                frame = json.loads(message)
            self.kinds.add(frame["type"])
            if frame["type"] == "ping":
                continue
            if frame["type"] == "viewers":
                self.rosters.append(frame)
                if rosters:
                    return frame
                continue
            if frame["type"] == "output":
                data = frame["data"] if isinstance(message, bytes) else base64.b64decode(frame["data"])
                if "offset" in frame:
                    assert self.next_offset is None or frame["offset"] == self.next_offset, (
                        f"output at offset {frame['offset']}, expected {self.next_offset}"
                    )
                    self.next_offset = frame["offset"] + len(data)
                self.output += data
            elif frame["type"] == "missed":
                assert self.next_offset is None or frame["offset"] == self.next_offset + frame["bytes"], frame
                self.missed.append(frame)
                self.next_offset = frame["offset"]
            return frame

    async def start(self, **fields: Any) -> dict[str, Any]:
        await self.send(type="start", **fields)
        frame = await self.recv()
        assert frame["type"] == "started", frame
        return frame

    async def type(self, text: str | bytes) -> None:
        data = text.encode() if isinstance(text, str) else text
        if (self.binary or self.raw) and self._send_bytes is not None:
            await self._send_bytes(data)
        else:
            await self.send(type="input", data=base64.b64encode(data).decode())

    async def read_until(self, marker: bytes, timeout: float = 30) -> bytes:
        """Reads output until ``marker`` has arrived; returns everything read so far."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while marker not in self.output:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"{marker!r} never arrived; got {bytes(self.output[-400:])!r}")
            frame = await self.recv(remaining)
            if frame["type"] in ("exit", "error") and marker not in self.output:
                raise AssertionError(f"{frame} before {marker!r}; got {bytes(self.output[-400:])!r}")
        return bytes(self.output)

    async def roster(
        self, condition: Callable[[list[dict[str, Any]]], bool], timeout: float = 30
    ) -> dict[str, Any]:
        """Reads frames (output is kept) until the latest `viewers` frame's list meets
        ``condition``; returns that frame. Fails on exit or error. Older lists do not count: the
        roster is what the last one says."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        seen = max(len(self.rosters) - 1, 0)
        while True:
            for frame in self.rosters[seen:]:
                if condition(frame["viewers"]):
                    return frame
            seen = len(self.rosters)
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"no viewers frame met the condition; got {self.rosters[-3:]}")
            frame = await self.recv(remaining, rosters=True)
            if frame["type"] in ("exit", "error"):
                raise AssertionError(f"{frame} while waiting for a viewers frame; got {self.rosters[-3:]}")

    async def expect(self, kind: str, timeout: float = 20) -> dict[str, Any]:
        """Skips output until a frame of ``kind`` arrives."""
        while True:
            frame = await self.recv(timeout)
            if frame["type"] == kind:
                return frame
            if frame["type"] not in ("output", "missed"):
                raise AssertionError(f"expected {kind}, got {frame}")
