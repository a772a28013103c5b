"""Admin for teams, members, API keys, hosts and capsules.

API keys are created here with a team and a name only; the raw key is shown once
in a message after saving, and only its hash is stored.
"""

from typing import Any

from django.contrib import admin, messages
from django.db.models import Count, QuerySet
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.safestring import SafeString

from capsules.keys import issue_key, revoke_api_keys
from capsules.models import APIKey, Host, Membership, Sandbox, Team
from capsules.services import terminal_path


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    raw_id_fields = ["user"]
    readonly_fields = ["created_at"]


class APIKeyInline(admin.TabularInline):
    """Keys of the team at a glance; keys are created and revoked from the API key admin."""

    model = APIKey
    extra = 0
    fields = ["name", "prefix", "created_at", "last_used", "revoked_at"]
    readonly_fields = ["name", "prefix", "created_at", "last_used", "revoked_at"]
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "id", "member_count", "created_at"]
    search_fields = ["name", "slug", "id"]
    prepopulated_fields = {"slug": ["name"]}
    readonly_fields = ["id", "created_at"]
    inlines = [MembershipInline, APIKeyInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Team]:
        return super().get_queryset(request).annotate(member_count=Count("memberships", distinct=True))

    @admin.display(description="members", ordering="member_count")
    def member_count(self, obj: Team) -> int:
        return int(getattr(obj, "member_count", 0))


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "team", "role", "created_at"]
    list_filter = ["role", "team"]
    list_select_related = ["user", "team"]
    search_fields = ["user__username", "user__email", "team__name", "team__slug"]
    raw_id_fields = ["user"]
    readonly_fields = ["created_at"]


@admin.register(APIKey)
class APIKeyAdmin(admin.ModelAdmin):
    list_display = ["prefix", "name", "team", "created_at", "last_used", "revoked_at"]
    list_filter = ["team", ("revoked_at", admin.EmptyFieldListFilter)]
    list_select_related = ["team"]
    search_fields = ["prefix", "name", "team__name"]
    actions = ["revoke"]
    # key_hash appears nowhere: it is useless to a person and should not be copied around.
    add_fields = ("team", "name")
    change_fields = ("team", "name", "prefix", "created_by", "created_at", "last_used", "revoked_at")
    change_readonly_fields = ("team", "prefix", "created_by", "created_at", "last_used", "revoked_at")

    def get_fields(self, request: HttpRequest, obj: APIKey | None = None) -> tuple[str, ...]:
        return self.add_fields if obj is None else self.change_fields

    def get_readonly_fields(self, request: HttpRequest, obj: APIKey | None = None) -> tuple[str, ...]:
        return () if obj is None else self.change_readonly_fields

    def save_model(self, request: HttpRequest, obj: APIKey, form: Any, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        raw_key = issue_key(obj)
        if request.user.is_authenticated:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)
        messages.success(
            request,
            f"The new API key is {raw_key} — copy it now: it is stored only as a hash "
            "and will not be shown again.",
        )

    @admin.action(description="Revoke selected API keys")
    def revoke(self, request: HttpRequest, queryset: QuerySet[APIKey]) -> None:
        count = revoke_api_keys(queryset)
        self.message_user(request, f"Revoked {count} API key(s).", messages.SUCCESS)


@admin.register(Host)
class HostAdmin(admin.ModelAdmin):
    list_display = ["address", "status", "last_heartbeat_at", "sandbox_count", "created_at"]
    list_filter = ["status"]
    search_fields = ["address"]
    readonly_fields = ["created_at"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Host]:
        return super().get_queryset(request).annotate(sandbox_count=Count("sandboxes"))

    @admin.display(description="sandboxes", ordering="sandbox_count")
    def sandbox_count(self, obj: Host) -> int:
        return int(getattr(obj, "sandbox_count", 0))


@admin.register(Sandbox)
class SandboxAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "team",
        "status",
        "host",
        "template",
        "created_at",
        "last_active_at",
        "terminal",
    ]
    list_filter = ["status", "team"]
    list_select_related = ["team", "host"]
    search_fields = ["id"]
    readonly_fields = ["id", "created_at"]
    date_hierarchy = "created_at"

    @admin.display(description="terminal")
    def terminal(self, obj: Sandbox) -> SafeString:
        return format_html('<a href="{}">open terminal</a>', terminal_path(obj.id))
