"""Whether the credentials a terminal socket was opened with still hold, asked again every
PTY_CREDENTIAL_CHECK_SECONDS while it stays open: a revoked key, a departed or deactivated user,
an expired token, an ended session or an expired or revoked share link must not keep a terminal
that outlives them.

Each check is one indexed query (two for a session: the user, then the session's row).
"""

from __future__ import annotations

import uuid
from importlib import import_module
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth import HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.db.models import Exists, OuterRef, Value
from django.utils import timezone
from django.utils.crypto import constant_time_compare

from capsules.models import APIKey, Membership
from shares import links as share_links

from .auth import Caller

REVOKED_KEY = "the API key was revoked"
DELETED_KEY = "the API key was deleted"
EXPIRED_TOKEN = "the access token expired"  # noqa: S105 - a message, not a secret
DELETED_USER = "the user was deleted"
INACTIVE_USER = "the user was deactivated"
NOT_A_MEMBER = "the user is no longer a member of the team"
NOT_STAFF = "the user is no longer staff"
ENDED_SESSION = "the session ended (signed out, expired, or the password changed)"
NARROWED_KEY = "the API key's scope was narrowed to terminal:observe"


def check_interval() -> float:
    """Seconds between two checks of one socket's credentials."""
    return float(settings.PTY_CREDENTIAL_CHECK_SECONDS)


async def still_valid(
    caller: Caller, team_id: uuid.UUID | str | None = None, *, staff: bool = False
) -> str | None:
    """None while the caller's credentials hold, else why they no longer do.

    `team_id` is the capsule's team, which a session caller (bound to no team) must still belong
    to; `staff` is for the admin routes, where the user must still be staff and a session caller
    needs no membership. A key or a token stays bound to its own team, whatever `team_id` says.
    """
    if caller.method == "share":
        return await _share_reason(caller)
    if caller.expires_at is not None and timezone.now() >= caller.expires_at:
        return EXPIRED_TOKEN
    if caller.method == "api_key":
        return await _key_reason(caller)
    if caller.method == "session" and team_id is None and not staff:
        raise ValueError("a session caller is checked against the capsule's team: pass team_id")
    team = None if caller.method == "session" and staff else (caller.team_id or team_id)
    return await _user_reason(caller, team, staff)


@database_sync_to_async
def _key_reason(caller: Caller) -> str | None:
    if caller.key_id is None:
        raise ValueError("an API key caller without key_id cannot be checked")
    row = APIKey.objects.filter(pk=caller.key_id).values_list("revoked_at", "scope").first()
    if row is None:
        return DELETED_KEY
    if row[0] is not None:
        return REVOKED_KEY
    if row[1] == APIKey.Scope.TERMINAL_OBSERVE and caller.scope != row[1]:
        return NARROWED_KEY
    return None


@database_sync_to_async
def _share_reason(caller: Caller) -> str | None:
    return share_links.still_valid(caller.share_id)


@database_sync_to_async
def _user_reason(caller: Caller, team_id: uuid.UUID | str | None, staff: bool) -> str | None:
    if caller.user is None or caller.user.pk is None:
        raise ValueError(f"a {caller.method} caller without a user cannot be checked")
    member: Any = Value(True)
    if team_id is not None:
        member = Exists(Membership.objects.filter(user_id=OuterRef("pk"), team_id=team_id))
    user = get_user_model().objects.filter(pk=caller.user.pk).annotate(member=member).first()
    if user is None:
        return DELETED_USER
    if not user.is_active:
        return INACTIVE_USER
    if staff and not getattr(user, "is_staff", False):
        return NOT_STAFF
    if not user.member:
        return NOT_A_MEMBER
    if caller.method == "session" and not _session_holds(caller.session_key, user):
        return ENDED_SESSION
    return None


def _session_holds(session_key: str | None, user: Any) -> bool:
    """Whether the session is still there, unexpired, signed in as `user` with their current
    password (Django's own test on each request, `django.contrib.auth.get_user`)."""
    if not session_key:
        return False
    store = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    data = store.load()
    if data.get(SESSION_KEY) != str(user.pk):
        return False
    session_hash = data.get(HASH_SESSION_KEY) or ""
    hashes = [user.get_session_auth_hash(), *user.get_session_auth_fallback_hash()]
    return bool(session_hash) and any(constant_time_compare(session_hash, h) for h in hashes)
