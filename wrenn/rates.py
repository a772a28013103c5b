"""Rates as settings write them, "10/min": how many attempts one period allows.

No Django here: wrenn/settings.py checks its rates with this module while it loads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

UNITS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600}
UNITS.update({"d": 86400, "day": 86400})
# "secs", "mins", "hours", "days"...; not "ms", which would read as milliseconds.
UNITS.update({f"{name}s": seconds for name, seconds in UNITS.items() if len(name) > 1})
OFF = "off"
_RATE_RE = re.compile(r"(\d+)/(\d*)([a-z]+)")
FORM = "'<count>/<period>' such as '10/min', '100/hour' or '5/15min' (periods: s, min, hour, day), or 'off'"


@dataclass(frozen=True)
class Rate:
    count: int
    seconds: int

    def __str__(self) -> str:
        return f"{self.count}/{self.seconds}s"


def parse_rate(text: str) -> Rate | None:
    """The rate `text` writes, None for "off"; ValueError saying what is wrong otherwise."""
    value = text.strip().lower()
    if value == OFF:
        return None
    match = _RATE_RE.fullmatch(value)
    if match is None or match.group(3) not in UNITS:
        raise ValueError(f"{text!r} is not a rate: write {FORM}")
    count, multiple, unit = int(match.group(1)), int(match.group(2) or 1), match.group(3)
    if count < 1 or multiple < 1:
        raise ValueError(
            f"{text!r} allows nothing: the count and the period must be at least 1 (or write 'off')"
        )
    return Rate(count, multiple * UNITS[unit])
