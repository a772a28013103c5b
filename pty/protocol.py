"""The terminal WebSocket protocol: message names, limits and validation of client frames.

Wire-compatible with the reference handler; every rejection carries the exact
message the client sees in its ``error`` frame.
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
from dataclasses import dataclass, field
from typing import Any

from protos import hostagent_pb2 as pb
from protos import rules

# Client -> server
AUTH = "auth"
START = "start"
CONNECT = "connect"
INPUT = "input"
RESIZE = "resize"
KILL = "kill"
PONG = "pong"
# Extensions: change a viewer's mode (a peer hands control over, a viewer takes or gives it up),
# and revoke the share link another viewer came in on (docs/protocol.md, "Observers").
CONTROL = "control"
REVOKE = "revoke"
CLIENT_TYPES = frozenset({AUTH, START, CONNECT, INPUT, RESIZE, KILL, PONG, CONTROL, REVOKE})

# Server -> client
STARTED = "started"
OUTPUT = "output"
EXIT = "exit"
ERROR = "error"
PING = "ping"
MISSED = "missed"  # extension: {"bytes": n, "offset": o}, n bytes before o are lost to this client
VIEWERS = "viewers"  # extension: {"you": id, "viewers": [{"id", "label", "mode", "since", …}]}

# A viewer's mode: a peer may type, resize and kill; an observer only watches.
PEER = "peer"
OBSERVER = "observer"
MODES = (PEER, OBSERVER)
MAX_VIEWER_ID = 64

DEFAULT_CMD = "/bin/bash"
DEFAULT_COLS = rules.DEFAULT_COLS
DEFAULT_ROWS = rules.DEFAULT_ROWS
# Frames above this (text, or binary in the raw and binary dialects) are refused with close code 1009
# (daphne's own hard limit is 1 MiB); 256 KiB holds any paste a terminal is expected to take.
MAX_FRAME_BYTES = 256 * 1024
CLOSE_TOO_BIG = 1009
# Offsets are the host agent's uint64 byte counts.
MAX_OFFSET = 2**64 - 1


# The binary dialect (pty/dialects.py), asked for as a WebSocket subprotocol: output then comes as binary
# frames (BINARY_HEADER: the offset of the first byte, 8 bytes big-endian, then the bytes), and
# binary frames from the client are input. Every other frame stays JSON text. It spares base64
# and JSON on both sides, and a third of the bytes on the wire.
BINARY_SUBPROTOCOL = "wrenn.binary.v1"
BINARY_HEADER = struct.Struct(">Q")


def binary_output(offset: int, data: bytes) -> bytes:
    return BINARY_HEADER.pack(offset) + data


class ProtocolError(Exception):
    """A client frame that cannot be accepted; ``str(exc)`` is sent to the client."""


@dataclass(frozen=True)
class StartRequest:
    cmd: str = DEFAULT_CMD
    args: list[str] = field(default_factory=list)
    cols: int = DEFAULT_COLS
    rows: int = DEFAULT_ROWS
    envs: dict[str, str] = field(default_factory=dict)
    cwd: str = ""
    user: str = ""

    def attach_request(self, sandbox_id: str, tag: str, owner: str) -> pb.PtyAttachRequest:
        """The host agent's request that starts this session."""
        return pb.PtyAttachRequest(
            sandbox_id=sandbox_id,
            tag=tag,
            cmd=self.cmd,
            args=self.args,
            cols=self.cols,
            rows=self.rows,
            envs=self.envs,
            cwd=self.cwd,
            user=self.user,
            owner=owner,
        )


@dataclass(frozen=True)
class Message:
    type: str
    start: StartRequest | None = None
    tag: str = ""
    data: bytes = b""
    cols: int = 0
    rows: int = 0
    token: str = ""
    offset: int | None = None
    # connect and control: the mode asked for (None: the caller's default); control and revoke:
    # the viewer meant (None: oneself).
    mode: str | None = None
    viewer: str | None = None


new_tag = rules.new_pty_tag


def parse(text: str) -> Message:
    """Validate one client text frame."""
    try:
        raw = json.loads(text)
    except ValueError:
        raise ProtocolError("invalid message: not valid JSON") from None
    except RecursionError:
        raise ProtocolError("invalid message: JSON nested too deeply") from None
    if not isinstance(raw, dict):
        raise ProtocolError("invalid message: expected a JSON object")
    _check_unicode(raw)
    kind = raw.get("type")
    if not isinstance(kind, str) or not kind:
        raise ProtocolError("invalid message: missing 'type'")
    if kind not in CLIENT_TYPES:
        raise ProtocolError(f"unknown message type '{kind[:40]}'")
    if kind == START:
        return Message(START, start=_start(raw))
    if kind == CONNECT:
        tag = raw.get("tag")
        if not tag:
            raise ProtocolError("connect requires a 'tag' field")
        if not isinstance(tag, str):
            raise ProtocolError("invalid connect: 'tag' must be a string")
        offset = raw.get("offset")
        if offset is not None and (
            isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset <= MAX_OFFSET
        ):
            raise ProtocolError(f"invalid connect: 'offset' must be an integer from 0 to {MAX_OFFSET}")
        mode = raw.get("mode")
        if mode is not None and mode not in MODES:
            raise ProtocolError("invalid connect: 'mode' must be 'peer' or 'observer'")
        return Message(CONNECT, tag=tag, offset=offset, mode=mode)
    if kind == CONTROL:
        mode = raw.get("mode")
        if mode not in MODES:
            raise ProtocolError("invalid control: 'mode' must be 'peer' or 'observer'")
        return Message(CONTROL, mode=mode, viewer=_viewer(raw, "control", required=False))
    if kind == REVOKE:
        return Message(REVOKE, viewer=_viewer(raw, "revoke", required=True))
    if kind == INPUT:
        return Message(INPUT, data=_base64(raw.get("data")))
    if kind == RESIZE:
        cols, rows = _size(raw, "resize", required=True)
        return Message(RESIZE, cols=cols, rows=rows)
    if kind == AUTH:
        token = raw.get("token")
        if not isinstance(token, str) or not token:
            raise ProtocolError("invalid auth: 'token' must be a non-empty string")
        return Message(AUTH, token=token)
    return Message(kind)


def _viewer(raw: dict[str, Any], what: str, *, required: bool) -> str | None:
    viewer = raw.get("viewer")
    if viewer is None and not required:
        return None
    if not isinstance(viewer, str) or not viewer or len(viewer) > MAX_VIEWER_ID:
        raise ProtocolError(f"invalid {what}: 'viewer' must be a viewer's id (a string)")
    return viewer


def _check_unicode(raw: dict[str, Any]) -> None:
    """JSON's escapes can spell lone surrogates ("\\ud800"), which no UTF-8 text (a command, a
    token, a gRPC string) can hold: refused here rather than failing wherever they reach."""
    stack: list[Any] = [raw]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
        elif isinstance(value, str) and not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise ProtocolError(
                    "invalid message: a string holds a lone surrogate (\\ud800-\\udfff)"
                ) from None


def _base64(value: Any) -> bytes:
    if not isinstance(value, str):
        raise ProtocolError("invalid input: 'data' must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError("invalid input: 'data' is not valid base64") from None


def _size(raw: dict[str, Any], what: str, *, required: bool) -> tuple[int, int]:
    cols: Any = raw.get("cols")
    rows: Any = raw.get("rows")
    if not required:
        cols = DEFAULT_COLS if cols in (None, 0) else cols
        rows = DEFAULT_ROWS if rows in (None, 0) else rows
    if not rules.is_window_size(cols, rows):
        raise ProtocolError(
            f"invalid {what}: 'cols' and 'rows' must be integers between 1 and {rules.MAX_WINDOW}"
        )
    return cols, rows


def _start(raw: dict[str, Any]) -> StartRequest:
    cmd = raw.get("cmd") or DEFAULT_CMD
    args = raw.get("args") or []
    envs = raw.get("envs") or {}
    cwd = raw.get("cwd") or ""
    user = raw.get("user") or ""
    if not isinstance(cmd, str):
        raise ProtocolError("invalid start: 'cmd' must be a string")
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise ProtocolError("invalid start: 'args' must be a list of strings")
    if not isinstance(envs, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in envs.items()
    ):
        raise ProtocolError("invalid start: 'envs' must be an object of strings")
    if not isinstance(cwd, str) or not isinstance(user, str):
        raise ProtocolError("invalid start: 'cwd' and 'user' must be strings")
    cols, rows = _size(raw, "start", required=False)
    return StartRequest(cmd=cmd, args=args, cols=cols, rows=rows, envs=envs, cwd=cwd, user=user)


def frame(kind: str, **fields: Any) -> str:
    """A server frame as JSON text."""
    return json.dumps({"type": kind, **fields}, separators=(",", ":"))
