"""Admin list of terminal sessions across every capsule, the live ones first to look at, with who
watches each live one (its roster: pty/roster.py), a link to watch it, and an action that kills the
selected sessions on their hosts (a capsule's own page lists its sessions as its agent reports
them, with a kill button each: capsules/admin.py). Kills are in the audit trail."""

import logging
from typing import Any

from django.contrib import admin, messages
from django.db import transaction
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from audit import trail
from capsules.actions import ActionError, kill_terminal_session
from capsules.models import TerminalSession
from capsules.terminals import close_sessions
from pty.roster import viewers_now

log = logging.getLogger(__name__)


class LiveFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "live"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "live"), ("no", "ended")]

    def queryset(
        self, request: HttpRequest, queryset: QuerySet[TerminalSession]
    ) -> QuerySet[TerminalSession]:
        if self.value() == "yes":
            return queryset.filter(ended_at__isnull=True)
        if self.value() == "no":
            return queryset.filter(ended_at__isnull=False)
        return queryset


@admin.register(TerminalSession)
class TerminalSessionAdmin(admin.ModelAdmin):
    list_display = [
        "tag",
        "sandbox",
        "state",
        "started_by",
        "command",
        "watching",
        "recording",
        "started_at",
        "ended_at",
    ]
    list_filter = [LiveFilter, "sandbox__host"]
    list_select_related = ["sandbox"]
    search_fields = ["tag", "sandbox__id", "started_by", "command"]
    date_hierarchy = "started_at"
    ordering = ["-started_at", "-pk"]
    actions = ["kill"]

    @admin.display(description="state")
    def state(self, obj: TerminalSession) -> str:
        if obj.ended_at is None:
            return "live"
        return "ended" if obj.exit_code is None else f"exited with code {obj.exit_code}"

    def get_queryset(self, request: HttpRequest) -> QuerySet[TerminalSession]:
        return super().get_queryset(request).prefetch_related("recordings")

    @admin.display(description="recording")
    def recording(self, obj: TerminalSession) -> str:
        """A link to play the session's recording (while it runs too), if it has one."""
        if not obj.recordings.all():
            return "-"
        return format_html('<a href="{}">play</a>', reverse("recording-play", args=[obj.sandbox_id, obj.tag]))

    @admin.display(description="viewers")
    def watching(self, obj: TerminalSession) -> str:
        """The live session's roster (who, and peer or observer), and a link to watch it."""
        if obj.ended_at is not None:
            return "-"
        try:
            roster = viewers_now(obj.sandbox_id, obj.tag)
        except Exception:  # Redis away: the count the consumers keep in the row
            log.warning("reading the roster of %s/%s failed", obj.sandbox_id, obj.tag, exc_info=True)
            return str(obj.viewers)
        page = reverse("capsule-terminal", args=[obj.sandbox_id])
        names = format_html_join(", ", "{} ({})", ((v["label"], v["mode"]) for v in roster))
        return format_html(
            '{}: {} <a href="{}?tag={}&amp;mode=observer">watch</a>',
            len(roster),
            names or "nobody",
            page,
            obj.tag,
        )

    # The rows are records the consumer and the heartbeats keep; nobody edits them by hand.
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_kill_permission(self, request: HttpRequest) -> bool:
        # Killing a terminal changes its capsule, as the kill button of the capsule's page does.
        return bool(request.user.has_perm("capsules.change_sandbox"))

    @admin.action(description="Kill selected terminal sessions", permissions=["kill"])
    def kill(self, request: HttpRequest, queryset: QuerySet[TerminalSession]) -> None:
        for session in queryset.select_related("sandbox__host").order_by("sandbox_id", "tag"):
            name = f"{session.sandbox_id}/{session.tag}"
            if session.ended_at is not None:
                messages.info(request, f"{name}: already ended")
                continue
            try:
                kill_terminal_session(session.sandbox, session.tag)
            except ActionError as error:
                self._audit_kill(request, session, error.message)
                if error.code != "not_found":
                    messages.error(request, f"{name}: {error.message}")
                    continue
                # Its host has no such session any more: the row was all that was left of it.
                with transaction.atomic():
                    close_sessions(Q(pk=session.pk))
                messages.warning(request, f"{name}: no longer on its host; marked ended")
            else:
                self._audit_kill(request, session, "")
                messages.success(request, f"{name}: killed")

    def _audit_kill(self, request: HttpRequest, session: TerminalSession, failure: str) -> None:
        trail.record(
            trail.TERMINAL_KILL,
            trail.user_actor(request.user),
            outcome=trail.FAILURE if failure else trail.SUCCESS,
            reason=failure,
            team_id=session.sandbox.team_id,
            capsule_id=session.sandbox_id,
            session_tag=session.tag,
            where=trail.where_from_request(request),
            detail={"how": "admin"},
        )
