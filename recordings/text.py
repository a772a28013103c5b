"""A recording's output as plain text, for grep: the `o` events with every escape sequence removed.

Removed: CSI sequences (colours, cursor moves, erasing: `ESC [ … final`), OSC strings (window
titles, hyperlinks: `ESC ] … BEL` or `ESC ] … ESC \\`), DCS, SOS, PM and APC strings, charset
selections (`ESC ( B`), every other ESC sequence, their 8-bit C1 forms, and control characters
other than newline and tab (a backspace is dropped, not applied). `\\r\\n` becomes a newline, and
a lone carriage return (a progress bar redrawing its line) starts a new line, so that no
redrawn text is glued to what it replaced. A sequence split across events is removed whole: the
state carries over from one event to the next.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterable, Iterator

log = logging.getLogger(__name__)

ESC = "\x1b"
BEL = "\x07"
# ESC followed by one of these selects a character set: one more character (the set) follows.
CHARSET_INTRO = set("()*+-./")
# ESC then an intermediate (`#`, `%`, space): one more character ends it.
TWO_CHAR_INTRO = set("#% ")
STRING_INTRO = {"P", "X", "^", "_"}


class Stripper:
    """A terminal output filter keeping text, newlines and tabs; feed it pieces in order."""

    def __init__(self) -> None:
        self._state = "text"
        self._cr = False

    def feed(self, text: str) -> str:
        out: list[str] = []
        for ch in text:
            self._step(ch, out)
        return "".join(out)

    def _emit(self, ch: str, out: list[str]) -> None:
        if self._cr:
            self._cr = False
            out.append("\n")
            if ch == "\n":
                return
        out.append(ch)

    def _step(self, ch: str, out: list[str]) -> None:
        state = self._state
        code = ord(ch)
        if state == "text":
            if ch == ESC:
                self._state = "esc"
            elif code == 0x9B:
                self._state = "csi"
            elif code == 0x9D:
                self._state = "osc"
            elif code in (0x90, 0x98, 0x9E, 0x9F):
                self._state = "string"
            elif ch == "\r":
                self._cr = True
            elif ch in "\n\t":
                self._emit(ch, out)
            elif code < 0x20 or 0x7F <= code <= 0x9F:
                return  # other control characters
            else:
                self._emit(ch, out)
        elif state == "esc":
            if ch == "[":
                self._state = "csi"
            elif ch == "]":
                self._state = "osc"
            elif ch in STRING_INTRO:
                self._state = "string"
            elif ch in CHARSET_INTRO or ch in TWO_CHAR_INTRO:
                self._state = "one-more"
            elif ch == ESC:
                self._state = "esc"
            else:
                self._state = "text"  # a two-character sequence (ESC 7, ESC =, ESC M, …)
        elif state == "one-more":
            self._state = "text"
        elif state == "csi":
            if ch == ESC:
                self._state = "esc"
            elif 0x40 <= code <= 0x7E:
                self._state = "text"
            # parameters, intermediates and controls inside a CSI are dropped with it
        elif state in ("osc", "string"):
            if ch == BEL or code == 0x9C:
                self._state = "text"
            elif ch == ESC:
                self._state = state + "-esc"
        elif state in ("osc-esc", "string-esc"):
            # ESC \ ends the string; ESC and anything else ends it too and starts a new sequence.
            self._state = "text"
            if ch != "\\":
                self._state = "esc"
                self._step(ch, out)


def lines_of(pieces: Iterator[bytes]) -> Iterator[bytes]:
    """Whole lines from pieces of a `.cast` (a line may span pieces)."""
    rest = b""
    for piece in pieces:
        rest += piece
        *whole, rest = rest.split(b"\n")
        yield from whole
    if rest:
        yield rest


def output_events(lines: Iterable[bytes], first: int = 0) -> Iterator[str]:
    """The text of each `o` event, in order (the header and other events skipped); `first`: the
    number of the first of `lines` in the cast (0, the header)."""
    for number, line in enumerate(lines, start=first):
        if number == 0 or not line.strip():
            continue
        try:
            event = json.loads(line)
        except ValueError:
            log.warning("recording line %d is not JSON; left out of the text", number + 1)
            continue
        if isinstance(event, list) and len(event) == 3 and event[1] == "o" and isinstance(event[2], str):
            yield event[2]


def plain_text(pieces: Iterator[bytes]) -> Iterator[bytes]:
    stripper = Stripper()
    for text in output_events(lines_of(pieces)):
        if cleaned := stripper.feed(text):
            yield cleaned.encode()


async def aplain_text(pieces: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """`plain_text` over an async stream of `.cast` pieces."""
    stripper = Stripper()
    rest = b""
    number = 0
    async for piece in pieces:
        rest += piece
        *whole, rest = rest.split(b"\n")
        cleaned = "".join(stripper.feed(text) for text in output_events(whole, number))
        number += len(whole)
        if cleaned:
            yield cleaned.encode()
    if rest and (cleaned := "".join(stripper.feed(t) for t in output_events([rest], number))):
        yield cleaned.encode()
