"""One row per audited action: who, what, when, from where, and how it ended.

Rows are only ever added. The model refuses to save a row twice or to delete one, its queryset
refuses bulk updates and deletes, and on PostgreSQL a trigger refuses UPDATE and DELETE whoever
sends them (migration 0001). References to other rows (team, user, key, host) are kept without a
database constraint and without cascades: deleting a team or a key leaves its events as they were.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone

from capsules.ids import SANDBOX_ID_MAX_LENGTH
from capsules.models import APIKey, Host, Team

APPEND_ONLY = "audit events are append-only: they cannot be changed or deleted"


class AppendOnly(Exception):
    pass


class AuditEventQuerySet(models.QuerySet["AuditEvent"]):
    def update(self, **kwargs: Any) -> int:
        raise AppendOnly(APPEND_ONLY)

    def delete(self) -> tuple[int, dict[str, int]]:
        raise AppendOnly(APPEND_ONLY)


def _kept(model: Any, related_name: str = "+") -> Any:
    """A reference that survives its target: no constraint, no cascade."""
    return models.ForeignKey(
        model,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        null=True,
        blank=True,
        related_name=related_name,
    )


class AuditEvent(models.Model):
    class Outcome(models.TextChoices):
        SUCCESS = "success", "Success"
        FAILURE = "failure", "Failure"

    class ActorType(models.TextChoices):
        USER = "user", "User"
        API_KEY = "api_key", "API key"
        SHARE = "share", "Share link"
        HOST = "host", "Host"
        SYSTEM = "system", "System"
        ANONYMOUS = "anonymous", "Anonymous"

    at = models.DateTimeField(default=timezone.now, db_index=True)
    # What happened: one of audit.trail.ACTIONS ("capsule.create", "terminal.join", …).
    action = models.CharField(max_length=64, db_index=True)
    outcome = models.CharField(max_length=16, choices=Outcome.choices, default=Outcome.SUCCESS)
    # Why it failed (or anything the outcome alone does not say).
    reason = models.TextField(blank=True)

    # Who: the kind of actor and how it is shown ("user:alice", "key:wrn_ab12cd34", "share:shr-…").
    actor_type = models.CharField(max_length=16, choices=ActorType.choices)
    actor_label = models.CharField(max_length=200, blank=True)
    team = _kept(Team)
    user = _kept(settings.AUTH_USER_MODEL)
    api_key = _kept(APIKey)
    host = _kept(Host)
    share_id = models.CharField(max_length=64, blank=True)

    # On what: the capsule and the terminal session (whose recording shares its tag).
    capsule_id = models.CharField(max_length=SANDBOX_ID_MAX_LENGTH, blank=True, db_index=True)
    session_tag = models.CharField(max_length=64, blank=True)

    # From where: the client's address, the worker that served it ("host:pid"), the Origin header.
    client_address = models.GenericIPAddressField(null=True, blank=True)
    worker = models.CharField(max_length=200, blank=True)
    origin = models.CharField(max_length=300, blank=True)
    # Anything else worth keeping (a key's name, a share's mode and expiry, …).
    detail = models.JSONField(default=dict, blank=True)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["team", "at"], name="audit_team_at")]

    def __str__(self) -> str:
        return (
            f"{self.at:%Y-%m-%d %H:%M:%S} {self.actor_label or self.actor_type} {self.action} {self.outcome}"
        )

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None or kwargs.get("force_update"):
            raise AppendOnly(APPEND_ONLY)
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise AppendOnly(APPEND_ONLY)
