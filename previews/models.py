"""What lets a caller without the team's credentials into a preview: a link, or a public port."""

from __future__ import annotations

import secrets

from django.db import models

from capsules.models import Sandbox

LINK_ID_PREFIX = "pvl-"


def new_link_id() -> str:
    return LINK_ID_PREFIX + secrets.token_hex(8)


class PreviewLink(models.Model):
    """A signed, expiring, revocable link into one port of one capsule.

    Only the SHA-256 of its token is kept; the token itself is shown once, in the URL the API
    answers with, and then lives in a cookie of that preview host alone.
    """

    id = models.CharField(primary_key=True, max_length=24, default=new_link_id, editable=False)
    sandbox = models.ForeignKey(Sandbox, on_delete=models.CASCADE, related_name="preview_links")
    port = models.PositiveIntegerField()
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_by = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "id"]

    def __str__(self) -> str:
        return f"{self.id} ({self.sandbox_id}:{self.port})"


class PublicPort(models.Model):
    """A port of a capsule anyone may open through its preview URL, without credentials."""

    sandbox = models.ForeignKey(Sandbox, on_delete=models.CASCADE, related_name="public_ports")
    port = models.PositiveIntegerField()
    created_by = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["port"]
        constraints = [models.UniqueConstraint(fields=["sandbox", "port"], name="one_public_port_row")]

    def __str__(self) -> str:
        return f"{self.sandbox_id}:{self.port} public"
