"""The new-capsule form: HTML sends text, the action checks the values.

Only the step from text to a number is done here; every rule (ranges, templates, the idle
timeout's floor) is capsules.validation's, applied by `capsules.actions.create_capsule` exactly as
for the API, so the page refuses what the API refuses with the same words.
"""

import re
from dataclasses import dataclass
from typing import Any

from django.http import QueryDict

from capsules.validation import (
    DEFAULT_MEMORY_MB,
    DEFAULT_TEMPLATE,
    DEFAULT_TIMEOUT_SEC,
    DEFAULT_VCPUS,
    ValidationFailed,
)
from capsules.validation import TEMPLATES as CAPSULE_TEMPLATES

INTEGER = re.compile(r"[+-]?[0-9]{1,18}")
# The form's fields, in the order the page shows them.
NUMBERS = ("vcpus", "memory_mb", "timeout_sec")
DEFAULTS: dict[str, Any] = {
    "template": DEFAULT_TEMPLATE,
    "vcpus": DEFAULT_VCPUS,
    "memory_mb": DEFAULT_MEMORY_MB,
    "timeout_sec": DEFAULT_TIMEOUT_SEC,
}


@dataclass(frozen=True)
class CreateForm:
    """What the person typed (shown again when the capsule is refused)."""

    values: dict[str, str]

    @classmethod
    def blank(cls) -> "CreateForm":
        return cls({name: str(value) for name, value in DEFAULTS.items()})

    @classmethod
    def from_post(cls, data: QueryDict) -> "CreateForm":
        return cls({name: str(data.get(name, "")).strip() for name in DEFAULTS})

    @property
    def templates(self) -> list[str]:
        return sorted(CAPSULE_TEMPLATES)

    def arguments(self) -> dict[str, Any]:
        """`create_capsule`'s keyword arguments; an empty field is left to the default, like a
        key left out of the API's body. ValidationFailed names a field that is not a number."""
        arguments: dict[str, Any] = {"template": self.values["template"] or None}
        for name in NUMBERS:
            raw = self.values[name]
            if not raw:
                arguments[name] = None
            elif INTEGER.fullmatch(raw):
                arguments[name] = int(raw)
            else:
                raise ValidationFailed(f"{name} must be an integer, got {raw[:40]!r}")
        return arguments
