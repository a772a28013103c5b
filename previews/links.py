"""Preview links and public ports: the actions that change them and the one check of a link token.

A link's token is random (256 bits) and only its SHA-256 is stored, bound to one capsule and one
port: every request looks it up, so a revoked or expired link stops working at once.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from capsules.models import Sandbox
from previews.models import PreviewLink, PublicPort

TOKEN_PREFIX = "wpt_"  # noqa: S105 - the prefix of a preview token, not a secret
REVOKED = "this preview link was revoked"
EXPIRED = "this preview link has expired"
UNKNOWN = "this preview link is not valid for this preview"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class IssuedLink:
    link: PreviewLink
    token: str


def issue_link(sandbox: Sandbox, port: int, expires_in: int, created_by: str) -> IssuedLink:
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    link = PreviewLink.objects.create(
        sandbox=sandbox,
        port=port,
        token_hash=hash_token(token),
        created_by=created_by[:200],
        expires_at=timezone.now() + timedelta(seconds=expires_in),
    )
    return IssuedLink(link, token)


def revoke_link(link: PreviewLink) -> PreviewLink:
    """Revoke the link (once: a second revoke keeps the first moment)."""
    if link.revoked_at is None:
        PreviewLink.objects.filter(pk=link.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
        link.refresh_from_db()
    return link


def link_status(link: PreviewLink, now: datetime | None = None) -> str:
    """`active`, `revoked` or `expired`."""
    if link.revoked_at is not None:
        return "revoked"
    return "expired" if link.expires_at <= (now or timezone.now()) else "active"


def check_link(token: str, capsule_id: str, port: int) -> tuple[PreviewLink | None, str]:
    """The link `token` opens for this capsule's port, or None and why not."""
    link = PreviewLink.objects.filter(token_hash=hash_token(token)).first()
    if link is None or link.sandbox_id != capsule_id or link.port != port:
        return None, UNKNOWN
    status = link_status(link)
    if status == "revoked":
        return None, REVOKED
    if status == "expired":
        return None, EXPIRED
    return link, ""


def link_still_valid(link_id: str) -> str | None:
    """None while the link holds, else why it does not (for open WebSockets)."""
    link = PreviewLink.objects.filter(pk=link_id).first()
    if link is None:
        return REVOKED
    status = link_status(link)
    return {"revoked": REVOKED, "expired": EXPIRED}.get(status)


def set_public(sandbox: Sandbox, port: int, public: bool, created_by: str) -> bool:
    """Make the port public or private again; returns whether it is public now."""
    if not public:
        PublicPort.objects.filter(sandbox=sandbox, port=port).delete()
        return False
    try:
        with transaction.atomic():
            PublicPort.objects.get_or_create(
                sandbox=sandbox, port=port, defaults={"created_by": created_by[:200]}
            )
    except IntegrityError:
        pass  # made public by a concurrent request: the same outcome
    return True


def is_public(capsule_id: str, port: int) -> bool:
    return PublicPort.objects.filter(sandbox_id=capsule_id, port=port).exists()


def max_link_seconds() -> int:
    return int(settings.WRENN_PREVIEW_LINK_MAX_SECONDS)
