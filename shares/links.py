"""Share links: issuing, revoking and checking them, each change written with its audit event.

A link's token is random (256 bits) and only its SHA-256 is stored; every use looks it up, so an
expired or revoked link stops working at once (open sockets within a credential check, or at
once when the revocation is published to the session's viewers).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audit import trail
from audit.models import AuditEvent
from capsules.models import Sandbox
from shares.models import ShareLink

TOKEN_PREFIX = "wrs_"  # noqa: S105 - the prefix of a share token, not a secret
# The token's shape: the prefix and 43 URL-safe characters (32 random bytes).
TOKEN_LENGTH = len(TOKEN_PREFIX) + 43

INVALID = "invalid share link"
EXPIRED = "the share link expired"
REVOKED = "the share link was revoked"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def is_share_token(token: str) -> bool:
    return token.startswith(TOKEN_PREFIX)


def share_actor(link: ShareLink) -> trail.Actor:
    return trail.Actor(AuditEvent.ActorType.SHARE, f"share:{link.pk}", share_id=link.pk)


@dataclass(frozen=True)
class Issued:
    link: ShareLink
    token: str


def max_seconds() -> int:
    return int(settings.WRENN_SHARE_LINK_MAX_SECONDS)


def default_seconds() -> int:
    return min(int(settings.WRENN_SHARE_LINK_DEFAULT_SECONDS), max_seconds())


def issue(sandbox: Sandbox, tag: str, expires_in: int, actor: trail.Actor, where: trail.Where) -> Issued:
    """A new observer link into session `tag` of `sandbox`; the token is the only copy."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with transaction.atomic():
        link = ShareLink.objects.create(
            sandbox=sandbox,
            tag=tag,
            token_hash=hash_token(token),
            created_by=actor.label[:200],
            expires_at=timezone.now() + timedelta(seconds=expires_in),
        )
        trail.record(
            trail.SHARE_CREATE,
            actor,
            team_id=sandbox.team_id,
            capsule_id=sandbox.pk,
            session_tag=tag,
            where=where,
            detail={"share_id": link.pk, "mode": link.mode, "expires_at": link.expires_at.isoformat()},
        )
    return Issued(link, token)


def revoke(link: ShareLink, actor: trail.Actor, where: trail.Where, *, how: str = "api") -> bool:
    """Revokes the link (once: a second revoke keeps the first moment); whether this call did."""
    with transaction.atomic():
        changed = ShareLink.objects.filter(pk=link.pk, revoked_at__isnull=True).update(
            revoked_at=timezone.now(), revoked_by=actor.label[:200]
        )
        if changed:
            trail.record(
                trail.SHARE_REVOKE,
                actor,
                team_id=link.sandbox.team_id,
                capsule_id=link.sandbox_id,
                session_tag=link.tag,
                where=where,
                detail={"share_id": link.pk, "how": how},
            )
    link.refresh_from_db()
    return bool(changed)


def status(link: ShareLink, now: datetime | None = None) -> str:
    """`active`, `revoked` or `expired`."""
    if link.revoked_at is not None:
        return "revoked"
    return "expired" if link.expires_at <= (now or timezone.now()) else "active"


def find(token: str) -> ShareLink | None:
    """The link `token` names (whatever its state), or None for a token that names none."""
    if not isinstance(token, str) or not is_share_token(token) or len(token) != TOKEN_LENGTH:
        return None
    return ShareLink.objects.select_related("sandbox").filter(token_hash=hash_token(token)).first()


def why_not(link: ShareLink | None) -> str | None:
    """None while the link lets its holder in, else why it does not."""
    if link is None:
        return INVALID
    return {"revoked": REVOKED, "expired": EXPIRED}.get(status(link))


def still_valid(share_id: str) -> str | None:
    """For open sockets: None while the link holds, else why it no longer does."""
    link = ShareLink.objects.filter(pk=share_id).first()
    return REVOKED if link is None else why_not(link)
