"""The terminal socket's dialects: how output, input and control frames look on the wire.

Three generations of clients share one route (docs/protocol.md has the negotiation rule):

- ``json``, the reference protocol: every frame JSON text, output and input base64 in ``data``
  (the reference browser tab, wrenn SDK 0.1 and 0.2);
- ``raw``, wrenn SDK 0.3: input and output are binary frames holding the bytes as they are;
- ``binary``, this project's ``wrenn.binary.v1``: binary frames as in ``raw``, but each output
  frame starts with the 8-byte offset of its first byte.

Control frames (start, connect, resize, kill, pong; started, exit, error, ping) are the
reference's JSON text in all three. A ``Codec`` turns one client's frames into typed messages
and output into frames. Extensions (the ``offset`` of JSON output, ``missed`` frames) go only
to a client that asked for them, so a reference client never sees a frame type it does not know.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import parse_qs

from . import protocol as p

JSON = "json"
RAW = "raw"
BINARY = "binary"
DIALECTS = (JSON, RAW, BINARY)

# Naming one of these chooses the dialect and the extensions with it.
SUBPROTOCOLS = {"wrenn.json.v1": JSON, "wrenn.raw.v1": RAW, p.BINARY_SUBPROTOCOL: BINARY}
JSON_SUBPROTOCOL = "wrenn.json.v1"
RAW_SUBPROTOCOL = "wrenn.raw.v1"

# A frame as it goes out: JSON text, or a binary frame.
Frame = str | bytes


class DialectError(Exception):
    """A dialect asked for that does not exist; ``str(exc)`` is sent to the client."""


@dataclass(frozen=True)
class Choice:
    """What the handshake says: the dialect (None: not stated), the subprotocol to accept, and
    whether the client reads extensions."""

    dialect: str | None = None
    subprotocol: str | None = None
    extensions: bool = False


def from_handshake(subprotocols: Iterable[str], query_string: bytes) -> Choice:
    """The dialect a client states: its first known subprotocol, else ``?dialect=``."""
    for name in subprotocols:
        if name in SUBPROTOCOLS:
            return Choice(SUBPROTOCOLS[name], name, extensions=True)
    try:
        query = parse_qs(query_string.decode("latin-1"))
    except ValueError:
        query = {}
    asked = query.get("dialect")
    if not asked:
        return Choice()
    if asked[-1] not in DIALECTS:
        raise DialectError(f"unknown dialect '{asked[-1][:40]}': use one of {', '.join(DIALECTS)}")
    return Choice(asked[-1], extensions=asked[-1] == BINARY)


# What a client that stated no dialect shows by the frames it sends (docs/protocol.md): only
# the reference browser tab authenticates by frame, and the first input is base64 JSON from the
# reference clients and a binary frame from wrenn SDK 0.3. Nothing else tells them apart (SDK
# 0.2 and 0.3 answer a ping with the same pong), so nothing else decides.
BINARY_FRAME = "binary frame"
_SHOWN_BY = {p.AUTH: JSON, p.INPUT: JSON, BINARY_FRAME: RAW}


def shown_by(kind: str) -> str | None:
    """The dialect a frame of ``kind`` (a message type, or BINARY_FRAME) shows, if any."""
    return _SHOWN_BY.get(kind)


class Codec:
    """One client's wire format. ``extensions``: whether it reads frames beyond the reference."""

    dialect = JSON
    binary_input = False

    def __init__(self, *, extensions: bool) -> None:
        self.extensions = extensions

    def output(self, offset: int, data: bytes) -> Frame:
        encoded = base64.b64encode(data).decode("ascii")
        if self.extensions:
            return p.frame(p.OUTPUT, data=encoded, offset=offset)
        return p.frame(p.OUTPUT, data=encoded)

    def lost(self, lost: int, offset: int) -> Frame:
        """``lost`` bytes before ``offset`` are gone for this client."""
        if self.extensions:
            return p.frame(p.MISSED, bytes=lost, offset=offset)
        return p.frame(
            p.ERROR,
            data=f"{lost} bytes of output were lost: the host no longer holds them",
            fatal=False,
        )

    def input(self, data: bytes) -> p.Message:
        """A binary frame from the client."""
        if not self.binary_input:
            raise p.ProtocolError(
                f"binary frames are not supported; send JSON text frames (or use the "
                f"{p.BINARY_SUBPROTOCOL} subprotocol)"
            )
        return p.Message(type=p.INPUT, data=data)


class RawCodec(Codec):
    dialect = RAW
    binary_input = True

    def output(self, offset: int, data: bytes) -> Frame:
        return data


class BinaryCodec(Codec):
    dialect = BINARY
    binary_input = True

    def __init__(self, *, extensions: bool = True) -> None:
        # The offset is this dialect's frame format: it is always an extension client.
        super().__init__(extensions=True)

    def output(self, offset: int, data: bytes) -> Frame:
        return p.binary_output(offset, data)


CODECS: dict[str, type[Codec]] = {JSON: Codec, RAW: RawCodec, BINARY: BinaryCodec}


def codec(dialect: str, *, extensions: bool) -> Codec:
    return CODECS[dialect](extensions=extensions)
