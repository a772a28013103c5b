"""API keys: `wrn_` + 40 hex characters, stored only as a sha256 hash and a display prefix."""

import hashlib
import re
import secrets
from datetime import timedelta
from typing import Any

from django.db.models import Q, QuerySet
from django.utils import timezone

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


def create_api_key(team: Team, name: str, created_by: Any | None = None) -> tuple[APIKey, str]:
    """Create a key for `team`; the raw key in the result is the only copy there will ever be."""
    api_key = APIKey(team=team, name=name, created_by=created_by)
    raw_key = issue_key(api_key)
    api_key.save()
    return api_key, raw_key


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


def revoke_api_keys(queryset: QuerySet[APIKey]) -> int:
    """Revoke the keys not yet revoked; returns how many were."""
    return queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
