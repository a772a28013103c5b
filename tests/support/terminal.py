"""A test client of the terminal protocol, over an in-process communicator or a real socket."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable
from typing import Any

SendText = Callable[[str], Awaitable[None]]
RecvText = Callable[[float], Awaitable[str]]


class Terminal:
    def __init__(self, send_text: SendText, recv_text: RecvText) -> None:
        self._send_text = send_text
        self._recv_text = recv_text
        self.output = bytearray()
        self.communicator: Any = None
        # The offset the next output frame must carry: every frame is checked, so a
        # lost, repeated or reordered byte fails the test that reads it.
        self.next_offset: int | None = None
        self.missed: list[dict[str, Any]] = []

    @classmethod
    def over_communicator(cls, communicator: Any) -> Terminal:
        async def recv(timeout: float) -> str:
            text: str = await communicator.receive_from(timeout=timeout)
            return text

        terminal = cls(lambda text: communicator.send_to(text_data=text), recv)
        terminal.communicator = communicator
        return terminal

    @classmethod
    def over_websocket(cls, websocket: Any) -> Terminal:
        async def recv(timeout: float) -> str:
            message = await asyncio.wait_for(websocket.recv(), timeout)
            assert isinstance(message, str), "the server sends text frames"
            return message

        return cls(websocket.send, recv)

    async def send(self, **message: Any) -> None:
        await self._send_text(json.dumps(message))

    async def recv(self, timeout: float = 20) -> dict[str, Any]:
        """The next frame that is not a keepalive ping; output is also kept in ``self.output``."""
        while True:
            frame: dict[str, Any] = json.loads(await self._recv_text(timeout))
            if frame["type"] == "ping":
                continue
            if frame["type"] == "output":
                data = base64.b64decode(frame["data"])
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

    async def expect(self, kind: str, timeout: float = 20) -> dict[str, Any]:
        """Skips output until a frame of ``kind`` arrives."""
        while True:
            frame = await self.recv(timeout)
            if frame["type"] == kind:
                return frame
            if frame["type"] not in ("output", "missed"):
                raise AssertionError(f"expected {kind}, got {frame}")
