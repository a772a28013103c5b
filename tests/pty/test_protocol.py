"""Parsing client frames: defaults, accepted shapes and each rejection's message."""

from __future__ import annotations

import pytest

from pty import protocol as p


def test_start_defaults() -> None:
    msg = p.parse('{"type": "start"}')
    assert msg.start == p.StartRequest(cmd="/bin/bash", args=[], cols=80, rows=24, envs={}, cwd="", user="")


def test_start_fields() -> None:
    msg = p.parse(
        '{"type": "start", "cmd": "/bin/sh", "args": ["-c", "true"], "cols": 100, "rows": 0,'
        ' "envs": {"A": "1"}, "cwd": "/tmp", "user": "root"}'
    )
    assert msg.start == p.StartRequest("/bin/sh", ["-c", "true"], 100, 24, {"A": "1"}, "/tmp", "root")


def test_input_is_decoded() -> None:
    assert p.parse('{"type": "input", "data": "aGk="}').data == b"hi"


def test_tags_look_like_the_reference() -> None:
    tag = p.new_tag()
    assert tag.startswith("pty-")
    assert len(tag) == 12
    assert int(tag[4:], 16) >= 0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"type": "resize", "cols": true, "rows": 5}', "invalid resize: 'cols' and 'rows' must be integers"),
        ('{"type": "resize", "cols": 1.5, "rows": 5}', "invalid resize: 'cols' and 'rows' must be integers"),
        ('{"type": "resize", "cols": 80}', "invalid resize: 'cols' and 'rows' must be integers"),
        ('{"type": "input"}', "invalid input: 'data' must be a base64 string"),
        ('{"type": "connect", "tag": 7}', "invalid connect: 'tag' must be a string"),
        ('{"type": "start", "envs": {"A": 1}}', "invalid start: 'envs' must be an object of strings"),
        ('{"type": "start", "cmd": ["x"]}', "invalid start: 'cmd' must be a string"),
        ('{"type": "auth"}', "invalid auth: 'token' must be a non-empty string"),
        ('{"type": 5}', "invalid message: missing 'type'"),
        ('"start"', "invalid message: expected a JSON object"),
        ('{"type": "auth", "token": "\\ud800"}', "invalid message: a string holds a lone surrogate"),
        ('{"type": "start", "args": ["\\udfff"]}', "invalid message: a string holds a lone surrogate"),
        ('{"type": "start", "envs": {"\\ud83d": "x"}}', "invalid message: a string holds a lone surrogate"),
        (
            '{"type": "connect", "tag": "t", "offset": 18446744073709551616}',
            "invalid connect: 'offset' must be",
        ),
        (
            '{"type": "connect", "tag": "t", "offset": -1}',
            "invalid connect: 'offset' must be an integer from 0",
        ),
        (
            '{"type": "connect", "tag": "t", "offset": 1e3}',
            "invalid connect: 'offset' must be an integer from 0",
        ),
        ("[" * 100_000 + "]" * 100_000, "invalid message: JSON nested too deeply"),
        ('{"type": "start", "cols": ' + "9" * 5000 + "}", "invalid message: not valid JSON"),
    ],
)
def test_rejections(text: str, message: str) -> None:
    with pytest.raises(p.ProtocolError) as excinfo:
        p.parse(text)
    assert str(excinfo.value).startswith(message)


def test_a_surrogate_pair_is_text_like_any_other() -> None:
    msg = p.parse('{"type": "start", "cmd": "/bin/echo", "args": ["\\ud83d\\ude00"]}')
    assert msg.start is not None
    assert msg.start.args == ["\U0001f600"]


def test_the_largest_offset_is_accepted() -> None:
    assert p.parse(f'{{"type": "connect", "tag": "t", "offset": {p.MAX_OFFSET}}}').offset == p.MAX_OFFSET
