"""Sign-in attempts and token refreshes, counted per client address and per account in Django's
cache: Redis with REDIS_URL, so that every daphne worker counts the same attempts.

A window opens with a key's first attempt and lasts the rate's period; an attempt past the rate is
refused until the window ends, which `RateLimited.retry_after` says. Every attempt counts, right or wrong: the
limit is on guesses, and nobody needs to sign in correctly that often either.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import math
import time
from functools import lru_cache

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.http import HttpRequest

from audit import signins
from wrenn.rates import Rate, parse_rate

log = logging.getLogger(__name__)

# An IPv6 client is counted by its /64, which one subscriber usually holds whole.
IPV6_PREFIX = 64
FROM_ADDRESS = "too many sign-in attempts from this address"
FOR_ACCOUNT = "too many sign-in attempts for this account"
REFRESHES = "too many token refreshes from this address"


class RateLimited(Exception):
    """An attempt past its rate; `str(exc)` is what the caller is told."""

    def __init__(self, what: str, retry_after: int) -> None:
        unit = "second" if retry_after == 1 else "seconds"
        self.message = f"{what}; try again in {retry_after} {unit}"
        self.retry_after = retry_after
        super().__init__(self.message)


@lru_cache(maxsize=16)
def rate_of(text: str) -> Rate | None:
    return parse_rate(text)


def hit(bucket: str, key: str, rate: Rate | None, now: float | None = None) -> int | None:
    """Count one attempt of `key` in `bucket`; the seconds until its window ends when the attempt
    is past `rate`, else None. No rate counts nothing.

    A window opens with the first attempt and lasts the rate's period (the cache expires its count
    then), so a burst is never split in two by a boundary on the clock.
    """
    if rate is None:
        return None
    now = time.time() if now is None else now
    digest = hashlib.sha256(key.encode()).hexdigest()[:32]
    base = f"ratelimit:{bucket}:{digest}:{rate.seconds}"
    try:
        cache.add(f"{base}:start", now, timeout=rate.seconds)
        cache.add(f"{base}:count", 0, timeout=rate.seconds)
        try:
            count = cache.incr(f"{base}:count")
        except ValueError:  # expired between the two calls: this attempt opens a new window
            cache.set(f"{base}:count", 1, timeout=rate.seconds)
            count = 1
        if count <= rate.count:
            return None
        start = cache.get(f"{base}:start", now)
    except Exception:
        # Signing in stays possible while the cache is down (the channel layer is then down too).
        log.warning("rate limit %s not counted: the cache failed", bucket, exc_info=True)
        return None
    return max(1, math.ceil(float(start) + rate.seconds - now))


def client_address(request: HttpRequest) -> str:
    """The address attempts are counted by: REMOTE_ADDR (daphne's --proxy-headers makes it the
    proxy's X-Forwarded-For), an IPv6 address as its /64."""
    return address_key(request.META.get("REMOTE_ADDR") or "")


def address_key(raw: str) -> str:
    """A client address as attempts are counted by: an IPv6 address as its /64."""
    try:
        address = ipaddress.ip_address(raw)
    except ValueError:
        return raw or "unknown"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/{IPV6_PREFIX}", strict=False))
    return str(address)


def account_key(username: str | None = None, email: str | None = None) -> str | None:
    """One key per account, whether it is named by username or by email (when one user has it)."""
    if username:
        return f"user:{username.casefold()}"
    if email:
        users = get_user_model().objects.filter(email__iexact=email)
        names = list(users.values_list(get_user_model().USERNAME_FIELD, flat=True)[:2])
        return f"user:{names[0].casefold()}" if len(names) == 1 else f"email:{email.casefold()}"
    return None


def _check(bucket: str, key: str, setting: str, what: str) -> None:
    wait = hit(bucket, key, rate_of(getattr(settings, setting)))
    if wait is not None:
        log.info("%s refused: %s (%s)", bucket, what, setting)
        raise RateLimited(what, wait)


def check_sign_in(request: HttpRequest, username: str | None = None, email: str | None = None) -> None:
    """Count a password attempt of this client for this account; RateLimited when either is past
    its rate (WRENN_LOGIN_ADDRESS_RATE, WRENN_LOGIN_RATE). The address is checked first, so that
    one client's flood does not count against the accounts it names. A refusal is audited."""
    try:
        _check("sign-in-address", client_address(request), "WRENN_LOGIN_ADDRESS_RATE", FROM_ADDRESS)
        account = account_key(username, email)
        if account is not None:
            _check("sign-in-account", account, "WRENN_LOGIN_RATE", FOR_ACCOUNT)
    except RateLimited as exc:
        signins.auth_failed(
            request, exc.message, signins.PASSWORD, rate_limited=True, username=username, email=email
        )
        raise


def check_refresh(request: HttpRequest) -> None:
    """Count a token refresh of this client; RateLimited past WRENN_TOKEN_REFRESH_RATE. Refresh
    tokens are signed, so there is nothing to guess per account. A refusal is audited."""
    try:
        _check("refresh-address", client_address(request), "WRENN_TOKEN_REFRESH_RATE", REFRESHES)
    except RateLimited as exc:
        signins.auth_failed(request, exc.message, signins.REFRESH, rate_limited=True)
        raise
