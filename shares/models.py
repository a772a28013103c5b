"""A share link: read-only access to one terminal session of one capsule, for whoever holds it."""

from __future__ import annotations

import secrets

from django.db import models

from capsules.models import Sandbox

SHARE_ID_PREFIX = "shr-"


def new_share_id() -> str:
    return SHARE_ID_PREFIX + secrets.token_hex(8)


class ShareLink(models.Model):
    """Only the SHA-256 of its token is kept; the token is shown once, in the API's answer.

    A link grants one session (`sandbox` and `tag`) and nothing else: not the capsule's other
    sessions, not a new one, not the team's API. Its holder may only observe.
    """

    class Mode(models.TextChoices):
        OBSERVER = "observer", "Observer"

    id = models.CharField(primary_key=True, max_length=24, default=new_share_id, editable=False)
    sandbox = models.ForeignKey(Sandbox, on_delete=models.CASCADE, related_name="share_links")
    tag = models.CharField(max_length=64)
    mode = models.CharField(max_length=16, choices=Mode.choices, default=Mode.OBSERVER)
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    # Who made it and who revoked it, as the audit trail names them ("user:alice", "key:wrn_…").
    created_by = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["-created_at", "id"]
        indexes = [models.Index(fields=["sandbox", "tag"], name="share_session")]

    def __str__(self) -> str:
        return f"{self.id} ({self.sandbox_id}/{self.tag})"
