"""The dialects' codecs and the handshake rule, as functions (pty/dialects.py)."""

from __future__ import annotations

import base64
import json

import pytest

from pty import dialects
from pty import protocol as p
from pty.dialects import BINARY_FRAME, Choice, DialectError, from_handshake, shown_by


@pytest.mark.parametrize(
    ("subprotocols", "query", "choice"),
    [
        ([], b"", Choice()),
        (["chat"], b"", Choice()),
        (["wrenn.binary.v1"], b"", Choice("binary", "wrenn.binary.v1", extensions=True)),
        (["wrenn.raw.v1"], b"", Choice("raw", "wrenn.raw.v1", extensions=True)),
        (["wrenn.json.v1"], b"", Choice("json", "wrenn.json.v1", extensions=True)),
        (["chat", "wrenn.raw.v1", "wrenn.binary.v1"], b"", Choice("raw", "wrenn.raw.v1", extensions=True)),
        ([], b"dialect=raw", Choice("raw")),
        ([], b"dialect=json", Choice("json")),
        ([], b"dialect=binary", Choice("binary", extensions=True)),
        ([], b"x=1&dialect=raw", Choice("raw")),
        (["wrenn.json.v1"], b"dialect=raw", Choice("json", "wrenn.json.v1", extensions=True)),
        ([], b"dialect=", Choice()),
    ],
)
def test_the_handshake_states_a_dialect_or_nothing(
    subprotocols: list[str], query: bytes, choice: Choice
) -> None:
    assert from_handshake(subprotocols, query) == choice


def test_an_unknown_dialect_is_named_in_the_error() -> None:
    with pytest.raises(DialectError, match=r"^unknown dialect 'vt100': use one of json, raw, binary$"):
        from_handshake([], b"dialect=vt100")
    with pytest.raises(DialectError, match=r"^unknown dialect '" + "x" * 40 + "': "):
        from_handshake([], b"dialect=" + b"x" * 5000)  # cut short


def test_what_each_frame_shows() -> None:
    assert shown_by(p.AUTH) == "json"  # the reference browser tab
    assert shown_by(p.INPUT) == "json"  # base64 input: the reference clients
    assert shown_by(BINARY_FRAME) == "raw"  # wrenn SDK 0.3
    for kind in (p.START, p.CONNECT, p.RESIZE, p.KILL, p.PONG):
        assert shown_by(kind) is None  # every generation sends these alike


def test_reference_output_is_the_reference_frame() -> None:
    frame = dialects.codec("json", extensions=False).output(7, b"\x00\xffhi")
    assert frame == '{"type":"output","data":"AP9oaQ=="}'


def test_extended_json_output_carries_the_offset() -> None:
    frame = dialects.codec("json", extensions=True).output(7, b"\x00\xffhi")
    assert isinstance(frame, str)
    assert json.loads(frame) == {
        "type": "output",
        "data": base64.b64encode(b"\x00\xffhi").decode(),
        "offset": 7,
    }


def test_raw_output_is_the_bytes_alone_and_binary_output_has_the_offset_first() -> None:
    assert dialects.codec("raw", extensions=False).output(7, b"\x00\xffhi") == b"\x00\xffhi"
    assert dialects.codec("binary", extensions=False).output(7, b"hi") == b"\x00" * 7 + b"\x07hi"


def test_lost_bytes_are_missed_for_extension_clients_and_an_error_for_the_others() -> None:
    assert json.loads(dialects.codec("json", extensions=True).lost(5, 10)) == {
        "type": "missed",
        "bytes": 5,
        "offset": 10,
    }
    assert json.loads(dialects.codec("binary", extensions=False).lost(5, 10))["type"] == "missed"
    for dialect in ("json", "raw"):
        assert json.loads(dialects.codec(dialect, extensions=False).lost(5, 10)) == {
            "type": "error",
            "data": "5 bytes of output were lost: the host no longer holds them",
            "fatal": False,
        }


def test_binary_input_is_input_only_where_the_dialect_has_it() -> None:
    assert dialects.codec("raw", extensions=False).input(b"ls\n") == p.Message(type=p.INPUT, data=b"ls\n")
    assert dialects.codec("binary", extensions=True).input(b"\x00") == p.Message(type=p.INPUT, data=b"\x00")
    with pytest.raises(p.ProtocolError, match="binary frames are not supported"):
        dialects.codec("json", extensions=True).input(b"ls\n")
