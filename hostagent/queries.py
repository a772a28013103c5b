"""Neutralise terminal queries in replayed output, so that a terminal showing it answers nothing.

A query makes the terminal type its answer into the program's input. Replayed to a new viewer,
the program that asked is long past the question, and the answer lands in the shell as if
typed. Each query is replaced by as many NUL bytes (terminals ignore NUL), so lengths, and so
offsets, stay exact. Only 7-bit introducers are handled (ESC [, ESC ], ESC P), not the 8-bit
C1 forms, which UTF-8 terminals do not honour.

A query cut in two by the start of the replay buffer is left alone: without its introducer the
terminal takes the rest for text and asks nothing. One cut by the end of a replay is completed
by live output, which is the program asking now, and is answered as it should be.
"""

from __future__ import annotations

import re

# Longest body looked at in OSC and DCS queries; real ones are a few bytes. The bound keeps a
# stray unterminated introducer from scanning far.
_STRING_MAX = 512
# No query is longer than this: a window read with this much context on each side
# neutralises a query that straddles its edge.
QUERY_MAX = _STRING_MAX + 16

_QUERY = re.compile(
    rb"""
    \x1b\[ (?:
        [0]?c | >0?c | =0?c               # DA1, DA2, DA3
      | [56]n | \?[0-9;]*n                # DSR: status, cursor position, private reports
      | \??[0-9]+\$p                      # DECRQM (ANSI and DEC private modes)
      | (?:1[1-9]|2[01])(?:;[0-9]*)*t     # window state, position, size and title reports
      | >0?q                              # XTVERSION
      | \?u                               # kitty keyboard flags
      | \?[0-9]*m                         # XTQMODKEYS
      | [01]?x                            # DECREQTPARM
    )
    | \x1b\] (?P<osc>4|5|1[0-9]|52) (?P<params>(?:;[^\x07\x1b]{0,%d})?) (?:\x07|\x1b\\)
    | \x1bP [$+]q [^\x07\x1b]{0,%d} (?:\x07|\x1b\\)   # DECRQSS, XTGETTCAP
    | \x05                                # ENQ: the answerback message
    """
    % (_STRING_MAX, _STRING_MAX),
    re.VERBOSE,
)


def _replace(match: re.Match[bytes]) -> bytes:
    # OSC 4/5/10-19/52 set a colour or the clipboard unless one of their values is "?".
    if match.group("osc") is not None and b"?" not in match.group("params").split(b";"):
        return match.group()
    return b"\0" * (match.end() - match.start())


def neutralise_queries(data: bytes) -> bytes:
    """`data` with every terminal query replaced by NUL bytes of the same length."""
    if b"\x1b" not in data and b"\x05" not in data:
        return data
    return _QUERY.sub(_replace, data)
