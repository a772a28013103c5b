"""Settings read from the environment refuse a bad value with the variable's name."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from wrenn.settings import _env_origins, _env_rate, _env_seconds


def test_origins_are_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_ORIGINS", " https://console.example.com, ,http://*.example.com:8080 ")
    assert _env_origins("TEST_ORIGINS") == ["https://console.example.com", "http://*.example.com:8080"]


def test_no_origins_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEST_ORIGINS", raising=False)
    assert _env_origins("TEST_ORIGINS") == []


def test_an_origin_needs_its_scheme(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_ORIGINS", "https://ok.example.com,console.example.com")
    with pytest.raises(
        ImproperlyConfigured,
        match=r"^TEST_ORIGINS entries must start with http:// or https://, got 'console.example.com'$",
    ):
        _env_origins("TEST_ORIGINS")


def test_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEST_SECONDS", raising=False)
    assert _env_seconds("TEST_SECONDS", 5.0) == 5.0
    monkeypatch.setenv("TEST_SECONDS", "0.25")
    assert _env_seconds("TEST_SECONDS", 5.0) == 0.25


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("soon", r"^TEST_SECONDS must be a number of seconds, got 'soon'$"),
        ("0", r"^TEST_SECONDS must be more than 0 seconds, got 0$"),
        ("-1", r"^TEST_SECONDS must be more than 0 seconds, got -1$"),
        ("nan", r"^TEST_SECONDS must be more than 0 seconds, got nan$"),
    ],
)
def test_bad_seconds(monkeypatch: pytest.MonkeyPatch, raw: str, message: str) -> None:
    monkeypatch.setenv("TEST_SECONDS", raw)
    with pytest.raises(ImproperlyConfigured, match=message):
        _env_seconds("TEST_SECONDS", 5.0)


def test_rates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEST_RATE", raising=False)
    assert _env_rate("TEST_RATE", "10/min") == "10/min"
    monkeypatch.setenv("TEST_RATE", "off")
    assert _env_rate("TEST_RATE", "10/min") == "off"


def test_a_bad_rate_names_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_RATE", "10 per minute")
    with pytest.raises(
        ImproperlyConfigured, match=r"^TEST_RATE: '10 per minute' is not a rate: write '<count>/<period>'"
    ):
        _env_rate("TEST_RATE", "10/min")
