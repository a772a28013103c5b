"""Failed authentication on the audit trail, one function for every door: API keys, bearer
tokens, refresh tokens, passwords (the API's and the admin's login pages) and sign-in limits.

An event names the reason and what was tried (a username or an email, a revoked key's display
prefix), never a password or a token. It is written in a transaction of its own: the request that
failed has nothing else to commit, and a caller's transaction rolling back must not take it along.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_login_failed
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
) -> AuditEvent:
    """Record one refused authentication from `request` (a Django or DRF request); `detail` says
    what was tried (a None is left out)."""
    tried = {
        name: value[:MAX_TRIED] if isinstance(value, str) else value
        for name, value in detail.items()
        if value is not None
    }
    path = getattr(request, "path", "")
    with transaction.atomic():
        return trail.record(
            trail.AUTH_FAILED,
            actor,
            outcome=trail.FAILURE,
            reason=reason,
            team_id=team_id,
            where=trail.where_from_request(request),
            detail={"credential": credential, "path": path[:MAX_TRIED], **tried},
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
