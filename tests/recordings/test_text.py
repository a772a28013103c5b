"""The plain text of a recording: escape sequences of every kind removed, text and layout kept."""

from __future__ import annotations

import json

import pytest

from recordings.text import Stripper, plain_text


@pytest.mark.parametrize(
    ("written", "text"),
    [
        ("\x1b[1;38;5;196mbold red\x1b[0m", "bold red"),
        ("\x1b]0;window title\x07after", "after"),
        ("\x1b]2;title ended by ST\x1b\\after", "after"),
        ("\x1b]8;;https://example.com\x1b\\link\x1b]8;;\x1b\\", "link"),
        ("\x1b[2J\x1b[H\x1b[12;40Hmoved\x1b[K\x1b[?25l\x1b[?1049h", "moved"),
        ("\x1b(B\x1b)0\x1b#8\x1b7\x1b8\x1b=\x1b>\x1bMkept", "kept"),
        ("\x1bP1$r0m\x1b\\\x1b_apc\x1b\\\x1b^pm\x1b\\\x1bXsos\x1b\\ok", "ok"),
        ("\x9b31mC1 CSI\x9b0m \x9d0;t\x9c8-bit", "C1 CSI 8-bit"),
        ("a\x00b\x07c\x08d\x7fe", "abcde"),
        ("tab\tnewline\n", "tab\tnewline\n"),
        ("line\r\nnext", "line\nnext"),
        ("10%\r50%\r100%\r\n", "10%\n50%\n100%\n"),
        ("\x1b[31\x1bXnested\x1b\\text", "text"),
    ],
)
def test_escapes_are_removed(written: str, text: str) -> None:
    assert Stripper().feed(written) == text


def test_a_sequence_split_across_events_is_removed_whole() -> None:
    stripper = Stripper()
    parts = ["\x1b", "[", "3", "1", "m", "red", "\x1b]0;ti", "tle\x07", "!"]
    assert "".join(stripper.feed(p) for p in parts) == "red!"


def test_only_output_events_count_and_lines_may_span_pieces() -> None:
    cast = b"".join(
        [
            b'{"version": 2, "width": 80, "height": 24}\n',
            json.dumps([0.1, "o", "\x1b[32mgreen\x1b[0m\r\n"]).encode() + b"\n",
            json.dumps([0.2, "i", "typed secret"]).encode() + b"\n",
            json.dumps([0.3, "m", "join user:alice"]).encode() + b"\n",
            json.dumps([0.4, "o", "done\r\n"]).encode() + b"\n",
        ]
    )
    pieces = [cast[i : i + 7] for i in range(0, len(cast), 7)]
    assert b"".join(plain_text(iter(pieces))) == b"green\ndone\n"
