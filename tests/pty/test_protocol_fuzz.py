"""Properties of ``pty.protocol.parse`` over arbitrary frames: the answer is a ``Message`` or a
``ProtocolError`` (whose text the client is sent), and a ``Message`` is one the rest of the server
can take: its strings encode as UTF-8 (protobuf, the database and the token checks all encode
them) and its numbers fit the host agent's fields.

Frames are what daphne can hand over: any ``str`` (a text frame is valid UTF-8, so no raw
surrogate), which as JSON may still spell a lone surrogate as the escape ``\\ud800``.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from protos import hostagent_pb2 as pb
from protos import rules
from pty import protocol as p

pytestmark = [pytest.mark.unit, pytest.mark.timeout(120)]

UINT64_MAX = 2**64 - 1
# What a client may put in an error frame's place: a short message, not an echo of its frame.
MAX_ERROR_LENGTH = 200

# Strings as JSON can carry them: anything, lone surrogates included.
surrogates = st.integers(0xD800, 0xDFFF).map(chr)
json_text = st.lists(st.one_of(st.characters(), surrogates), max_size=12).map("".join)
edge_integers = st.sampled_from([-1, 0, 1, 2**31, 2**63 - 1, 2**63, UINT64_MAX, 2**64, 10**30, -(2**64)])
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    edge_integers,
    st.floats(allow_nan=True, allow_infinity=True),
    json_text,
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(json_text, inner, max_size=4),
    max_leaves=12,
)

# Values of the right shape, so that the checks past each field's type are reached too.
plausible: dict[str, st.SearchStrategy[Any]] = {
    "cmd": json_text,
    "args": st.lists(json_text, max_size=3),
    "envs": st.dictionaries(json_text, json_text, max_size=3),
    "cwd": json_text,
    "user": json_text,
    "cols": st.integers(-2, rules.MAX_WINDOW + 2) | edge_integers,
    "rows": st.integers(-2, rules.MAX_WINDOW + 2) | edge_integers,
    "tag": st.from_regex(rules.TAG_RE, fullmatch=True) | json_text,
    "offset": st.integers(min_value=0) | edge_integers,
    "data": st.binary(max_size=64).map(lambda data: base64.b64encode(data).decode()) | json_text,
    "token": json_text,
}
FIELDS = {
    p.START: ["cmd", "args", "cols", "rows", "envs", "cwd", "user"],
    p.CONNECT: ["tag", "offset"],
    p.INPUT: ["data"],
    p.RESIZE: ["cols", "rows"],
    p.AUTH: ["token"],
    p.KILL: [],
    p.PONG: [],
}


def _message(kind: str) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {"type": st.just(kind)},
        optional={name: plausible[name] | json_values for name in FIELDS[kind]},
    )


messages = st.sampled_from(sorted(FIELDS)).flatmap(_message)
nested = st.integers(1, 100_000).map(lambda depth: "[" * depth + "]" * depth)
nested_in_a_message = st.integers(1, 50_000).map(
    lambda depth: '{"type": "start", "args": ' + "[" * depth + "]" * depth + "}"
)
frames = st.one_of(
    # json.dumps escapes a lone surrogate as \udXXX, as a client's JSON encoder sends it.
    messages.map(json.dumps),
    json_values.map(json.dumps),
    st.text(),
    nested,
    nested_in_a_message,
)

# Found by a probe of the real socket (each crashed the consumer); kept as fixed examples.
KNOWN = [
    '{"type": "auth", "token": "\\ud800"}',
    '{"type": "start", "cmd": "\\ud800"}',
    '{"type": "start", "envs": {"A": "\\udc00"}}',
    '{"type": "connect", "tag": "pty-00000000", "offset": 18446744073709551616}',
    "[" * 2_000 + "]" * 2_000,
]


def _with_known(test: Any) -> Any:
    for frame in KNOWN:
        test = example(frame)(test)
    return test


@_with_known
@given(frames)
def test_parse_answers_a_message_or_a_protocol_error(frame: str) -> None:
    try:
        message = p.parse(frame)
    except p.ProtocolError as exc:
        text = str(exc)
        assert 0 < len(text) <= MAX_ERROR_LENGTH
        # It goes to the client inside an error frame, as UTF-8.
        p.frame(p.ERROR, data=text, fatal=True).encode("utf-8")
    else:
        assert isinstance(message, p.Message)
        assert message.type in p.CLIENT_TYPES


def _utf8(*values: str) -> None:
    for value in values:
        value.encode("utf-8")


@_with_known
@given(frames)
def test_a_parsed_message_fits_the_host_agent(frame: str) -> None:
    try:
        message = p.parse(frame)
    except p.ProtocolError:
        return
    _utf8(message.type, message.tag, message.token)
    if message.start is not None:
        start = message.start
        _utf8(start.cmd, start.cwd, start.user, *start.args, *start.envs, *start.envs.values())
        start.attach_request("cl-0", p.new_tag(), "key:wrn_0")  # what the consumer sends the agent
    if message.type == p.CONNECT:
        assert message.offset is None or 0 <= message.offset <= UINT64_MAX
        pb.PtyReadRequest(sandbox_id="cl-0", tag=message.tag, offset=message.offset or 0)
        pb.PtyAttachRequest(sandbox_id="cl-0", tag=message.tag, resume=True, from_offset=message.offset or 0)
    if message.type == p.RESIZE:
        assert rules.is_window_size(message.cols, message.rows)
    assert len(message.data) <= p.MAX_FRAME_BYTES
