"""Failed authentication on the audit trail, one function for every door: API keys, bearer
tokens, refresh tokens, passwords (the API's and the admin's login pages) and sign-in limits.

An event names the reason and what was tried (a username or an email, a revoked key's display
prefix), never a password or a token. It is written in a transaction of its own: the request that
failed has nothing else to commit, and a caller's transaction rolling back must not take it along.

Anyone can knock without credentials, as often as they like, so refusals are recorded per client
address at most WRENN_AUDIT_AUTH_FAILURE_RATE times a window; the next one is recorded saying
that the rest of that window's are left out, and the others are not (the trail must not be the
way to fill the database). The count is in Django's cache, shared by the workers like the sign-in
limits' (capsules/ratelimit.py).
"""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_login_failed
from django.core.cache import cache
from django.db import transaction
from django.dispatch import receiver

from audit import trail
from audit.models import AuditEvent

# What a failure was about: `detail["credential"]`.
API_KEY = "api_key"
BEARER = "access_token"
REFRESH = "refresh_token"
PASSWORD = "password"  # noqa: S105 - the kind of credential, not one
MAX_TRIED = 200


def auth_failed(
    request: Any,
    reason: str,
    credential: str,
    *,
    actor: trail.Actor = trail.ANONYMOUS,
    team_id: uuid.UUID | str | None = None,
    **detail: Any,
) -> AuditEvent | None:
    """Record one refused authentication from `request` (a Django or DRF request); `detail` says
    what was tried (a None is left out). None when the address's refusals are past the rate."""
    path = getattr(request, "path", "")
    where = trail.where_from_request(request)
    return refusal(where, reason, credential, actor=actor, team_id=team_id, path=path[:MAX_TRIED], **detail)


def refusal(
    where: trail.Where,
    reason: str,
    credential: str,
    *,
    actor: trail.Actor = trail.ANONYMOUS,
    team_id: uuid.UUID | str | None = None,
    capsule_id: str = "",
    **detail: Any,
) -> AuditEvent | None:
    """Record one refused authentication from `where` (a request's or a socket's), unless its
    address is past the rate; None then."""
    note = flood_note(where)
    if note is None:
        return None
    tried = {
        name: value[:MAX_TRIED] if isinstance(value, str) else value
        for name, value in detail.items()
        if value is not None
    }
    with transaction.atomic():
        return trail.record(
            trail.AUTH_FAILED,
            actor,
            outcome=trail.FAILURE,
            reason=f"{reason}; {note}" if note else reason,
            team_id=team_id,
            capsule_id=capsule_id,
            where=where,
            detail={"credential": credential, **tried},
        )


def flood_note(where: trail.Where) -> str | None:
    """ "" while the address's refusals are within the rate; for the first one past it, what the
    trail is told of the rest of the window; None for the others (not recorded)."""
    from capsules.ratelimit import address_key, hit, rate_of  # which imports this module

    rate = rate_of(settings.WRENN_AUDIT_AUTH_FAILURE_RATE)
    address = address_key(where.client_address or "")
    wait = hit("audit-auth-failed", address, rate)
    if wait is None or rate is None:
        return ""
    try:
        first = cache.add(f"audit-auth-failed:told:{address}:{rate.seconds}", 1, timeout=wait)
    except Exception:
        first = True  # the cache is down: hit() counted nothing either
    if not first:
        return None
    return (
        f"more than {rate.count} refusals from {address} within {rate.seconds} s: "
        f"those of the next {wait} s are not recorded"
    )


def password_refusal(username: str) -> str:
    """Why a username and password were refused, as an operator needs to know it."""
    user = get_user_model()._default_manager.filter(**{get_user_model().USERNAME_FIELD: username}).first()
    if user is None:
        return "unknown user"
    if not user.is_active:
        return "inactive user"
    return "wrong password"


@receiver(user_login_failed, dispatch_uid="audit.signins.password_failed")
def password_failed(sender: Any, credentials: dict[str, Any], request: Any = None, **kwargs: Any) -> None:
    """Django's `authenticate()` refused a username and password: the API's sign-in endpoints and
    the admin's login page all come through here. `credentials` has the password masked already;
    only the username is kept."""
    if request is None:
        return
    username = str(credentials.get(get_user_model().USERNAME_FIELD) or credentials.get("username") or "")
    auth_failed(request, password_refusal(username), PASSWORD, username=username)
