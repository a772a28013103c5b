"""wrenn.rates: the rates settings write, and why a bad one is refused."""

from __future__ import annotations

import re

import pytest

from wrenn.rates import FORM, Rate, parse_rate


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("10/min", Rate(10, 60)),
        ("10/minutes", Rate(10, 60)),
        ("5/15min", Rate(5, 900)),
        ("100/hour", Rate(100, 3600)),
        ("3/s", Rate(3, 1)),
        ("2/days", Rate(2, 86400)),
        (" 10/MIN ", Rate(10, 60)),
        ("off", None),
        ("OFF", None),
    ],
)
def test_rates(text: str, rate: Rate | None) -> None:
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["10", "ten/min", "10/ms", "10/week", "-1/min", "10/min/2", ""])
def test_what_is_not_a_rate(text: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(f'{text!r} is not a rate: write {FORM}')}$"):
        parse_rate(text)


@pytest.mark.parametrize("text", ["0/min", "10/0min"])
def test_a_rate_that_allows_nothing(text: str) -> None:
    message = f"{text!r} allows nothing: the count and the period must be at least 1 (or write 'off')"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        parse_rate(text)


def test_a_rate_reads_as_count_per_seconds() -> None:
    assert str(Rate(10, 60)) == "10/60s"
