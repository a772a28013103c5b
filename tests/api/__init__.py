"""Tests of the REST API under /v1/ and /api/v1/."""

from datetime import datetime
from typing import Any


def iso(value: datetime | None) -> str | None:
    """How the API writes a datetime: ISO 8601, UTC as Z."""
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def error(code: str, message: str) -> dict[str, Any]:
    """The API's error body."""
    return {"error": {"code": code, "message": message}}
