"""Checks on what a caller asks for when creating a capsule; every message names the field.

Limits come from settings (`WRENN_MAX_VCPUS`, `WRENN_MAX_MEMORY_MB`, `WRENN_MAX_TIMEOUT_SEC`), read
at call time so that tests and deployments can change them.
"""

import re
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

# The templates a capsule can start from, with what each one reserves.
TEMPLATES: dict[str, dict[str, int]] = {
    "minimal": {"disk_size_mb": 1024},
    "base": {"disk_size_mb": 4096},
}

DEFAULT_TEMPLATE = "minimal"
DEFAULT_VCPUS = 1
DEFAULT_MEMORY_MB = 512
DEFAULT_TIMEOUT_SEC = 300
MIN_MEMORY_MB = 128
# A positive idle timeout shorter than this would pause a capsule between two keystrokes.
MIN_TIMEOUT_SEC = 60

MAX_METADATA_KEYS = 20
MAX_METADATA_VALUE_LENGTH = 64
METADATA_KEY_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9._-]{0,63}")
# Keys the platform fills in itself; a caller must not be able to spoof them.
RESERVED_METADATA_KEYS = frozenset({"kernel_version", "vmm_version", "agent_version", "envd_version"})


class ValidationFailed(Exception):
    """A request value is unacceptable; `message` says which field and why."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class CreateParams:
    template: str = DEFAULT_TEMPLATE
    vcpus: int = DEFAULT_VCPUS
    memory_mb: int = DEFAULT_MEMORY_MB
    timeout_sec: int = DEFAULT_TIMEOUT_SEC
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def disk_size_mb(self) -> int:
        return TEMPLATES[self.template]["disk_size_mb"]


def max_vcpus() -> int:
    return int(settings.WRENN_MAX_VCPUS)


def max_memory_mb() -> int:
    return int(settings.WRENN_MAX_MEMORY_MB)


def max_timeout_sec() -> int:
    return int(settings.WRENN_MAX_TIMEOUT_SEC)


def type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def clean_int(name: str, value: Any, low: int, high: int) -> int:
    # bool is an int subclass, but `true` is never a sensible count.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationFailed(f"{name} must be an integer, not {type_name(value)}")
    if not low <= value <= high:
        raise ValidationFailed(f"{name} must be between {low} and {high}, got {value}")
    return value


def clean_template(template: Any) -> str:
    if not isinstance(template, str):
        raise ValidationFailed(f"template must be a string, not {type_name(template)}")
    if template not in TEMPLATES:
        known = ", ".join(sorted(TEMPLATES))
        raise ValidationFailed(f"template {template!r} is unknown; known templates: {known}")
    return template


def clean_timeout(timeout_sec: Any) -> int:
    if isinstance(timeout_sec, bool) or not isinstance(timeout_sec, int):
        raise ValidationFailed(f"timeout_sec must be an integer, not {type_name(timeout_sec)}")
    if timeout_sec < 0:
        raise ValidationFailed(f"timeout_sec must be 0 (never pause) or positive, got {timeout_sec}")
    if timeout_sec > max_timeout_sec():
        raise ValidationFailed(f"timeout_sec must be at most {max_timeout_sec()}, got {timeout_sec}")
    if 0 < timeout_sec < MIN_TIMEOUT_SEC:
        return MIN_TIMEOUT_SEC
    return timeout_sec


def clean_metadata(metadata: Any) -> dict[str, str]:
    if not isinstance(metadata, dict):
        raise ValidationFailed(f"metadata must be an object of strings, not {type_name(metadata)}")
    if len(metadata) > MAX_METADATA_KEYS:
        raise ValidationFailed(f"metadata has {len(metadata)} keys; at most {MAX_METADATA_KEYS} are allowed")
    for key, value in metadata.items():
        if not isinstance(key, str) or not METADATA_KEY_RE.fullmatch(key):
            raise ValidationFailed(
                f"metadata key {key!r} is invalid: use 1 to 64 letters, digits, '.', '_' or '-', "
                "starting with a letter or digit"
            )
        if key in RESERVED_METADATA_KEYS:
            raise ValidationFailed(f"metadata key {key!r} is reserved for the system")
        if not isinstance(value, str):
            raise ValidationFailed(f"metadata value of {key!r} must be a string, not {type_name(value)}")
        if len(value) > MAX_METADATA_VALUE_LENGTH:
            raise ValidationFailed(
                f"metadata value of {key!r} is {len(value)} characters; "
                f"at most {MAX_METADATA_VALUE_LENGTH} are allowed"
            )
    return dict(metadata)


def clean_create_params(
    template: str | None,
    vcpus: int | None,
    memory_mb: int | None,
    timeout_sec: int | None,
    metadata: dict[str, Any] | None,
) -> CreateParams:
    """The checked parameters of a new capsule, defaults filled in; None means "not given"."""
    return CreateParams(
        template=DEFAULT_TEMPLATE if template is None else clean_template(template),
        vcpus=DEFAULT_VCPUS if vcpus is None else clean_int("vcpus", vcpus, 1, max_vcpus()),
        memory_mb=(
            DEFAULT_MEMORY_MB
            if memory_mb is None
            else clean_int("memory_mb", memory_mb, MIN_MEMORY_MB, max_memory_mb())
        ),
        timeout_sec=DEFAULT_TIMEOUT_SEC if timeout_sec is None else clean_timeout(timeout_sec),
        metadata={} if metadata is None else clean_metadata(metadata),
    )
