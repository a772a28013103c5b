"""The key that signs sessions and JWTs: from the environment or a file, and never the public
development default on a server that others can reach (anyone could forge its tokens)."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

# Public: it is in this repository. Good enough for DEBUG and loopback-only development and tests.
DEVELOPMENT_KEY = "dev-only-insecure-key-set-DJANGO_SECRET_KEY-in-production"
HOW_TO_SET = (
    "Set DJANGO_SECRET_KEY, or DJANGO_SECRET_KEY_FILE to a file holding it, to a secret of your own "
    "(every worker the same), e.g. from: python3 -c 'import secrets; print(secrets.token_urlsafe(50))'. "
    "`make run` and `make cluster` generate one in their data directory (var/secret_key)."
)


def is_loopback(host: str) -> bool:
    """True for the names and addresses of this machine's loopback interface only."""
    host = host.strip().lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.removeprefix("[").removesuffix("]")).is_loopback
    except ValueError:
        return False


def exposure(host: str, allowed_hosts: Sequence[str]) -> str | None:
    """Why this server is meant to be reached from other machines, or None when nothing says so.

    `HOST` is the address the run scripts bind daphne to; behind a proxy the workers bind to
    loopback, but `DJANGO_ALLOWED_HOSTS` then names the public host they answer for.
    """
    if host and not is_loopback(host):
        return f"HOST={host} is not a loopback address"
    public = [name for name in allowed_hosts if not is_loopback(name)]
    if public:
        return f"DJANGO_ALLOWED_HOSTS names {', '.join(public)}"
    return None


def read_key_file(path: str) -> str:
    try:
        key = Path(path).read_text().strip()
    except OSError as exc:
        raise ImproperlyConfigured(f"DJANGO_SECRET_KEY_FILE={path} cannot be read: {exc.strerror}") from None
    if not key:
        raise ImproperlyConfigured(f"DJANGO_SECRET_KEY_FILE={path} is empty. {HOW_TO_SET}")
    return key


def choose(key: str, key_file: str, *, debug: bool, host: str, allowed_hosts: Sequence[str]) -> str:
    """DJANGO_SECRET_KEY, else the contents of DJANGO_SECRET_KEY_FILE, else the development key;
    which production mode (DEBUG off and reachable from elsewhere) refuses."""
    chosen = key or (read_key_file(key_file) if key_file else DEVELOPMENT_KEY)
    if chosen == DEVELOPMENT_KEY and not debug:
        reason = exposure(host, allowed_hosts)
        if reason is not None:
            raise ImproperlyConfigured(
                "Refusing to start with the public development DJANGO_SECRET_KEY in production mode "
                f"(DJANGO_DEBUG is not 1 and {reason}): anyone could sign sessions and JWTs for any "
                f"user. {HOW_TO_SET}"
            )
    return chosen
