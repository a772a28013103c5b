"""Properties of the dialects' codecs (pty/dialects.py) over arbitrary bytes, offsets and
handshakes: output decodes back to exactly the bytes and offset it was made from, in the form
each dialect's clients read; binary input is input or a ProtocolError; a handshake states a
dialect, nothing, or a DialectError, never anything else."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pty import dialects
from pty import protocol as p

pytestmark = [pytest.mark.unit, pytest.mark.timeout(120)]

offsets = st.integers(0, p.MAX_OFFSET)
payloads = st.binary(max_size=4096)
names = st.sampled_from(dialects.DIALECTS)
REFERENCE_TYPES = {"started", "output", "exit", "error", "ping"}


def decoded(frame: dialects.Frame, dialect: str) -> tuple[int | None, bytes]:
    """What a client of ``dialect`` reads from an output frame: (offset if carried, bytes)."""
    if dialect == dialects.JSON:
        assert isinstance(frame, str)
        message = json.loads(frame)
        assert message["type"] == "output"
        return message.get("offset"), base64.b64decode(message["data"], validate=True)
    assert isinstance(frame, bytes)
    if dialect == dialects.BINARY:
        (offset,) = p.BINARY_HEADER.unpack_from(frame)
        return offset, frame[p.BINARY_HEADER.size :]
    return None, frame


@given(names, st.booleans(), offsets, payloads)
def test_output_decodes_to_exactly_what_was_sent(
    dialect: str, extensions: bool, offset: int, data: bytes
) -> None:
    codec = dialects.codec(dialect, extensions=extensions)
    got_offset, got = decoded(codec.output(offset, data), dialect)
    assert got == data
    carries_offset = dialect == dialects.BINARY or (dialect == dialects.JSON and extensions)
    assert got_offset == (offset if carries_offset else None)


@given(names, st.booleans(), st.integers(0, p.MAX_OFFSET), offsets)
def test_lost_bytes_are_a_frame_the_client_knows(
    dialect: str, extensions: bool, lost: int, offset: int
) -> None:
    codec = dialects.codec(dialect, extensions=extensions)
    frame = codec.lost(lost, offset)
    assert isinstance(frame, str)  # a control frame, JSON text in every dialect
    message = json.loads(frame)
    if codec.extensions:
        assert message == {"type": "missed", "bytes": lost, "offset": offset}
    else:
        assert message["type"] in REFERENCE_TYPES
        assert message["fatal"] is False


@given(names, st.booleans(), payloads)
def test_binary_input_is_input_or_a_protocol_error(dialect: str, extensions: bool, data: bytes) -> None:
    codec = dialects.codec(dialect, extensions=extensions)
    if dialect == dialects.JSON:
        with pytest.raises(p.ProtocolError, match=r"^binary frames are not supported; "):
            codec.input(data)
    else:
        assert codec.input(data) == p.Message(type=p.INPUT, data=data)


def handshake(subprotocols: list[str], query: bytes) -> dialects.Choice | str:
    """The choice, or the text of the DialectError."""
    try:
        return dialects.from_handshake(subprotocols, query)
    except dialects.DialectError as exc:
        return str(exc)


subprotocol_names = st.one_of(st.sampled_from(sorted(dialects.SUBPROTOCOLS)), st.text(max_size=20))


@given(st.lists(subprotocol_names, max_size=4), st.binary(max_size=200))
def test_a_handshake_states_a_dialect_nothing_or_a_named_error(subprotocols: list[str], query: bytes) -> None:
    choice = handshake(subprotocols, query)
    known = [name for name in subprotocols if name in dialects.SUBPROTOCOLS]
    if isinstance(choice, str):
        assert not known  # a stated subprotocol wins over any query
        assert choice.startswith("unknown dialect '")
        assert len(choice) < 120
        return
    assert choice.dialect is None or choice.dialect in dialects.DIALECTS
    assert choice.subprotocol == (known[0] if known else None)
