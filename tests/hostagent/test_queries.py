"""The terminal-query neutraliser: queries become NULs of the same length, everything else stays."""

from __future__ import annotations

import pytest

from hostagent.queries import neutralise_queries

QUERIES = {
    "DA1": b"\x1b[c",
    "DA1 with 0": b"\x1b[0c",
    "DA2": b"\x1b[>c",
    "DA2 with 0": b"\x1b[>0c",
    "DA3": b"\x1b[=c",
    "DSR status": b"\x1b[5n",
    "DSR cursor position": b"\x1b[6n",
    "DECXCPR": b"\x1b[?6n",
    "DSR private": b"\x1b[?996n",
    "DECRQM private": b"\x1b[?2004$p",
    "DECRQM ANSI": b"\x1b[4$p",
    "window state": b"\x1b[11t",
    "text area pixels": b"\x1b[14t",
    "text area pixels, variant": b"\x1b[14;2t",
    "text area characters": b"\x1b[18t",
    "screen characters": b"\x1b[19t",
    "window title": b"\x1b[21t",
    "OSC 4 palette, BEL": b"\x1b]4;1;?\x07",
    "OSC 4 palette, ST": b"\x1b]4;1;?\x1b\\",
    "OSC 4 several colours": b"\x1b]4;1;?;2;?\x07",
    "OSC 10 foreground": b"\x1b]10;?\x07",
    "OSC 11 background": b"\x1b]11;?\x1b\\",
    "OSC 12 cursor": b"\x1b]12;?\x07",
    "OSC 52 clipboard": b"\x1b]52;c;?\x07",
    "XTVERSION": b"\x1b[>0q",
    "XTVERSION without 0": b"\x1b[>q",
    "DECRQSS SGR": b"\x1bP$qm\x1b\\",
    "DECRQSS DECSCL": b'\x1bP$q"p\x1b\\',
    "XTGETTCAP": b"\x1bP+q544e\x1b\\",
    "kitty keyboard flags": b"\x1b[?u",
    "XTQMODKEYS": b"\x1b[?4m",
    "ENQ": b"\x05",
}

ORDINARY = {
    "SGR reset": b"\x1b[0m",
    "SGR colour": b"\x1b[1;31m",
    "SGR 256 colours": b"\x1b[38;5;196m",
    "cursor position": b"\x1b[5;10H",
    "cursor up": b"\x1b[6A",
    "erase display": b"\x1b[2J",
    "erase line": b"\x1b[K",
    "bracketed paste on": b"\x1b[?2004h",
    "hide cursor": b"\x1b[?25l",
    "cursor style": b"\x1b[2 q",
    "resize window": b"\x1b[8;24;80t",
    "push title": b"\x1b[22;0t",
    "a cursor position report": b"\x1b[12;40R",
    "a DA1 answer": b"\x1b[?1;2c",
    "window title set": b"\x1b]0;my title\x07",
    "background colour set": b"\x1b]11;#000000\x07",
    "palette colour set": b"\x1b]4;1;rgb:ff/00/00\x1b\\",
    "hyperlink with a question mark": b"\x1b]8;;https://example.com/?q=1\x07",
    "plain text that looks like a query": b"[6n ]11;? 5n",
    "unterminated OSC query": b"\x1b]11;?",
    "half a CSI query": b"\x1b[6",
}


@pytest.mark.parametrize("query", QUERIES.values(), ids=QUERIES.keys())
def test_a_query_becomes_as_many_nul_bytes(query: bytes) -> None:
    assert neutralise_queries(query) == b"\0" * len(query)


@pytest.mark.parametrize("query", QUERIES.values(), ids=QUERIES.keys())
def test_text_around_a_query_is_untouched(query: bytes) -> None:
    data = b"before\x1b[1mbold\x1b[0m" + query + b"after\r\n"
    assert neutralise_queries(data) == b"before\x1b[1mbold\x1b[0m" + b"\0" * len(query) + b"after\r\n"


@pytest.mark.parametrize("sequence", ORDINARY.values(), ids=ORDINARY.keys())
def test_an_ordinary_sequence_is_untouched(sequence: bytes) -> None:
    data = b"x" + sequence + b"y"
    assert neutralise_queries(data) == data


def test_every_query_in_a_stream_is_neutralised() -> None:
    data = b"".join(b"<" + query + b">" for query in QUERIES.values())
    expected = b"".join(b"<" + b"\0" * len(query) + b">" for query in QUERIES.values())
    assert neutralise_queries(data) == expected


def test_a_query_split_in_two_is_neutralised_once_joined() -> None:
    first, second = b"prompt$ \x1b]11", b";?\x1b\\ls\r\n"
    # Each half alone is no query: the caller must search the joined output.
    assert neutralise_queries(first) == first
    assert neutralise_queries(second) == second
    assert neutralise_queries(first + second) == b"prompt$ " + b"\0" * 8 + b"ls\r\n"


def test_data_without_escapes_is_returned_as_is() -> None:
    data = b"hello world\n" * 1000
    assert neutralise_queries(data) is data


def test_many_unterminated_introducers_stay_fast() -> None:
    data = b"\x1b]4;" + b";" * 100_000 + b"\x1bP$q" * 10_000
    assert neutralise_queries(data) == data
