"""API keys: `wrn_` + 40 hex characters, stored only as a sha256 hash and a display prefix.

Creating and revoking one leaves an event on the audit trail, in the same transaction.
"""

import hashlib
import re
import secrets
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from audit import trail
from capsules.models import APIKey, Team

KEY_PREFIX = "wrn_"
DISPLAY_PREFIX_LENGTH = 12
# Recording every use would turn each authenticated request into a write.
LAST_USED_RESOLUTION = timedelta(minutes=1)
_KEY_RE = re.compile(r"wrn_[0-9a-f]{40}")


def hash_key(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode()).hexdigest()


def issue_key(api_key: APIKey) -> str:
    """Give an unsaved key row a fresh secret; returns the raw key, which is never stored."""
    raw_key = KEY_PREFIX + secrets.token_hex(20)
    api_key.prefix = raw_key[:DISPLAY_PREFIX_LENGTH]
    api_key.key_hash = hash_key(raw_key)
    return raw_key


def create_api_key(
    team: Team,
    name: str,
    created_by: Any | None = None,
    scope: str = APIKey.Scope.FULL,
    *,
    audit_actor: trail.Actor = trail.SYSTEM,
    where: trail.Where | None = None,
) -> tuple[APIKey, str]:
    """Create a key for `team`; the raw key in the result is the only copy there will ever be."""
    api_key = APIKey(team=team, name=name, created_by=created_by, scope=scope)
    raw_key = issue_key(api_key)
    with transaction.atomic():
        api_key.save()
        record_created(api_key, audit_actor, where)
    return api_key, raw_key


def record_created(api_key: APIKey, audit_actor: trail.Actor, where: trail.Where | None) -> None:
    """The audit event of a new key (saved in the caller's transaction)."""
    trail.record(
        trail.API_KEY_CREATE,
        audit_actor,
        team_id=api_key.team_id,
        where=where,
        detail=_described(api_key),
    )


def _described(api_key: APIKey) -> dict[str, Any]:
    return {"key_id": api_key.pk, "prefix": api_key.prefix, "name": api_key.name, "scope": api_key.scope}


def authenticate_api_key(raw_key: str) -> APIKey | None:
    """The live key matching `raw_key` (with its team), or None for unknown, malformed or revoked keys."""
    if not isinstance(raw_key, str) or not _KEY_RE.fullmatch(raw_key):
        return None
    api_key = (
        APIKey.objects.select_related("team")
        .filter(key_hash=hash_key(raw_key), revoked_at__isnull=True)
        .first()
    )
    if api_key is None:
        return None
    now = timezone.now()
    if api_key.last_used is None or now - api_key.last_used >= LAST_USED_RESOLUTION:
        # Conditional so that concurrent requests on several workers write at most once.
        APIKey.objects.filter(
            Q(last_used__isnull=True) | Q(last_used__lte=now - LAST_USED_RESOLUTION), pk=api_key.pk
        ).update(last_used=now)
        api_key.last_used = now
    return api_key


def refused_key(raw_key: str) -> APIKey | None:
    """The revoked key matching `raw_key`, if that is why it was refused (for the audit trail)."""
    if not isinstance(raw_key, str) or not _KEY_RE.fullmatch(raw_key):
        return None
    return APIKey.objects.filter(key_hash=hash_key(raw_key), revoked_at__isnull=False).first()


def revoke_api_keys(
    queryset: QuerySet[APIKey],
    *,
    audit_actor: trail.Actor = trail.SYSTEM,
    where: trail.Where | None = None,
) -> int:
    """Revoke the keys not yet revoked, each with its audit event; returns how many were."""
    with transaction.atomic():
        keys = list(queryset.filter(revoked_at__isnull=True).select_for_update(of=("self",)).order_by("pk"))
        if not keys:
            return 0
        APIKey.objects.filter(pk__in=[key.pk for key in keys]).update(revoked_at=timezone.now())
        for key in keys:
            trail.record(
                trail.API_KEY_REVOKE, audit_actor, team_id=key.team_id, where=where, detail=_described(key)
            )
    return len(keys)
