"""Which requests are previews: a Host of `{port}-{capsule_id}.{WRENN_PREVIEW_DOMAIN}`, read strictly.

The port is canonical decimal (digits, no leading zero, 1-65535): `03000` names no port rather
than port 3000, so that one port has one host name, and one cookie. The capsule id follows the
one rule of every capsule id (protos/rules.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from protos import rules

MAX_PORT = 65535
PORT_RE = re.compile(r"[1-9][0-9]{0,4}")


class BadPreviewHost(ValueError):
    """A host under the preview domain that names no port and capsule; the message says why."""


@dataclass(frozen=True)
class PreviewTarget:
    port: int
    capsule_id: str
    # The host as the client wrote it (lowercase): the preview's origin, and its cookie's host.
    host: str


def parse_port(text: str) -> int | None:
    """`text` as a port if it is one written canonically, else None."""
    if not PORT_RE.fullmatch(text):
        return None
    port = int(text)
    return port if port <= MAX_PORT else None


def _split_port(host: str) -> tuple[str, str]:
    name, sep, port = host.rpartition(":")
    # An IPv6 literal keeps its colons inside brackets: "[::1]:8000" has a port, "[::1]" none.
    if sep and port.isdigit() and (":" not in name or name.endswith("]")):
        return name, port
    return host, ""


def target_of(host: str, domain: str | None = None) -> PreviewTarget | None:
    """The preview a Host header names; None when it is not under the preview domain (the app's
    own hosts); BadPreviewHost when it is, but its first label is no `{port}-{capsule_id}`."""
    domain = (domain if domain is not None else settings.WRENN_PREVIEW_DOMAIN).lower()
    host = host.strip().lower()
    name, port = _split_port(host)
    domain_name, domain_port = _split_port(domain)
    if domain_port and port != domain_port:
        return None
    label, dot, rest = name.partition(".")
    if not dot or rest.rstrip(".") != domain_name:
        return None
    port_text, dash, capsule_id = label.partition("-")
    if not dash:
        raise BadPreviewHost(f"preview host {label!r} must be <port>-<capsule id>")
    number = parse_port(port_text)
    if number is None:
        raise BadPreviewHost(
            f"invalid preview port {port_text[:12]!r}: write a port from 1 to {MAX_PORT} in digits, "
            "with no leading zero"
        )
    if not rules.is_sandbox_id(capsule_id):
        raise BadPreviewHost(rules.bad_sandbox_id(capsule_id).replace("sandbox_id", "capsule id", 1))
    return PreviewTarget(port=number, capsule_id=capsule_id, host=host)


def request_host(scope: dict[str, Any]) -> str | None:
    """The host a request was made to, as Django reads it: X-Forwarded-Host behind a proxy that
    sets it (USE_X_FORWARDED_HOST), else Host."""
    headers = scope.get("headers") or []
    found: dict[bytes, str] = {}
    for key, value in headers:
        if key in (b"host", b"x-forwarded-host") and key not in found:
            found[key] = bytes(value).decode("latin1")
    forwarded = found.get(b"x-forwarded-host") if settings.USE_X_FORWARDED_HOST else None
    if forwarded:
        return forwarded.split(",", 1)[0].strip()
    return found.get(b"host")


def preview_url(target_port: int, capsule_id: str, scheme: str, app_host: str = "") -> str:
    """The URL of a preview: the preview domain's own port when it has one, else the port of the
    host the app was called on (so `make run`'s `localhost` domain gets daphne's port, and one
    behind a proxy on 443 gets none)."""
    _app_name, request_port = _split_port(app_host)
    domain = settings.WRENN_PREVIEW_DOMAIN
    _name, domain_port = _split_port(domain)
    default = {"http": "80", "https": "443"}.get(scheme)
    suffix = f":{request_port}" if not domain_port and request_port and request_port != default else ""
    return f"{scheme}://{target_port}-{capsule_id}.{domain}{suffix}/"
