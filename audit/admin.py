"""The audit trail in the admin: listed, filtered and searched, never changed.

Nobody adds, changes or deletes an event here, a superuser included: every permission but
viewing is refused, so the change page is read-only, a POST to it is refused, and the bulk
delete action is gone. An event links to its capsule's page, its terminal session and the
session's recording, when they exist.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin.utils import quote
from django.db.models import Exists, OuterRef, QuerySet, Subquery
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from audit.models import AuditEvent
from capsules.models import Sandbox, TerminalSession
from recordings.models import Recording

NONE = "-"


def playback_path(capsule_id: str, tag: str) -> str:
    """The recording's playback page (the pages app serves it at this path)."""
    return f"/capsules/{quote(capsule_id)}/recordings/{quote(tag)}/"


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = [
        "at",
        "action",
        "outcome",
        "actor_label",
        "team_shown",
        "capsule_link",
        "session_link",
        "recording_link",
        "client_address",
        "reason_shown",
    ]
    list_filter = ["action", "outcome", "actor_type", "team"]
    list_select_related = ["team"]
    search_fields = ["actor_label", "capsule_id", "session_tag", "client_address"]
    date_hierarchy = "at"
    ordering = ["-at", "-id"]
    list_per_page = 100
    fields = (
        "at",
        "action",
        "outcome",
        "reason",
        "actor_type",
        "actor_label",
        "user",
        "api_key",
        "host",
        "share_id",
        "team_shown",
        "capsule_link",
        "session_link",
        "recording_link",
        "client_address",
        "worker",
        "origin",
        "detail",
    )
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[AuditEvent]:
        capsule = Sandbox.objects.filter(pk=OuterRef("capsule_id"))
        session = TerminalSession.objects.filter(
            sandbox_id=OuterRef("capsule_id"), tag=OuterRef("session_tag")
        )
        recording = Recording.objects.filter(sandbox_id=OuterRef("capsule_id"), tag=OuterRef("session_tag"))
        return (
            super()
            .get_queryset(request)
            .select_related("team")
            .annotate(
                capsule_exists=Exists(capsule),
                session_pk=Subquery(session.values("pk")[:1]),
                recording_exists=Exists(recording),
            )
        )

    # Append-only, whoever asks: viewing is the only permission there is.
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="team", ordering="team__name")
    def team_shown(self, obj: AuditEvent) -> str:
        if obj.team_id is None:
            return NONE
        # A deleted team's events keep its id (the reference has no constraint).
        # get_queryset joins the team, so a missing one is None rather than an error.
        return str(obj.team) if obj.team is not None else f"{obj.team_id} (deleted)"

    @admin.display(description="reason")
    def reason_shown(self, obj: AuditEvent) -> str:
        return obj.reason[:120] or NONE

    @admin.display(description="capsule", ordering="capsule_id")
    def capsule_link(self, obj: AuditEvent) -> SafeString | str:
        if not obj.capsule_id:
            return NONE
        if not getattr(obj, "capsule_exists", False):
            return obj.capsule_id
        url = reverse("admin:capsules_sandbox_change", args=[quote(obj.capsule_id)])
        return format_html('<a href="{}">{}</a>', url, obj.capsule_id)

    @admin.display(description="terminal session", ordering="session_tag")
    def session_link(self, obj: AuditEvent) -> SafeString | str:
        if not obj.session_tag:
            return NONE
        session_pk = getattr(obj, "session_pk", None)
        if session_pk is None:
            return obj.session_tag
        url = reverse("admin:capsules_terminalsession_change", args=[session_pk])
        return format_html('<a href="{}">{}</a>', url, obj.session_tag)

    @admin.display(description="recording")
    def recording_link(self, obj: AuditEvent) -> SafeString | str:
        if not (obj.capsule_id and obj.session_tag and getattr(obj, "recording_exists", False)):
            return NONE
        return format_html('<a href="{}">play</a>', playback_path(obj.capsule_id, obj.session_tag))
