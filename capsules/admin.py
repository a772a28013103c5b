"""Admin for teams, members, API keys, hosts and capsules.

Capsules change state only through `capsules.actions`, the functions the REST API
calls too. Raw API keys and host tokens are shown once in a message after they are
made; only their hashes are stored, and no page shows a hash.
"""

from collections.abc import Callable
from datetime import datetime
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.utils import quote, unquote
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Model, Q, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect
from django.urls import URLPattern, path
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.views.decorators.http import require_POST

from audit import trail
from capsules.acting import by_person
from capsules.actions import (
    ActionError,
    create_capsule,
    destroy_capsule,
    kill_terminal_session,
    list_terminal_sessions,
    pause_capsule,
    resume_capsule,
    set_network_policy,
)
from capsules.hosts import issue_host_token
from capsules.keys import create_api_key, issue_key, record_created, revoke_api_keys
from capsules.models import APIKey, Host, Membership, Sandbox, Team
from capsules.network import clean_network
from capsules.quotas import quota_of, usage_of
from capsules.services import terminal_path
from capsules.validation import DEFAULT_TEMPLATE, TEMPLATES, ValidationFailed, clean_metadata, clean_timeout

SHOWN_ONCE = "copy it now: it is stored only as a hash and will not be shown again."
# Where the token message suggests keeping a host token: any file only the agent can read,
# but not under /etc or /usr, which every bubblewrap capsule sees (read-only).
AGENT_CREDENTIAL_FILE = "/var/lib/wrenn/host-token"


def api_key_message(raw_key: str) -> str:
    return f"The new API key is {raw_key} — {SHOWN_ONCE}"


# --- Buttons on change pages: small POST forms outside the model form ----------


def object_url(
    model_admin: admin.ModelAdmin, route: str, view: Callable[..., HttpResponse], name: str, **kwargs: Any
) -> URLPattern:
    """`<object_id>/<route>/`, POST only, behind the admin's login and CSRF checks (`admin_view`)."""
    opts = model_admin.opts
    return path(
        f"<path:object_id>/{route}/",
        model_admin.admin_site.admin_view(require_POST(view)),
        kwargs,
        name=f"{opts.app_label}_{opts.model_name}_{name}",
    )


def changeable_object(
    model_admin: admin.ModelAdmin, request: HttpRequest, object_id: str, *, view_is_enough: bool = False
) -> Any:
    """The object a button acts on, if the user may change it (or, with `view_is_enough`, see it)."""
    obj = model_admin.get_object(request, unquote(object_id))
    if obj is None:
        raise Http404(f"{model_admin.opts.verbose_name} not found")
    allowed = (
        model_admin.has_view_or_change_permission if view_is_enough else model_admin.has_change_permission
    )
    if not allowed(request, obj):
        raise PermissionDenied
    return obj


def back_to_change_page(obj: Model) -> HttpResponseRedirect:
    opts = obj._meta
    return redirect(f"admin:{opts.app_label}_{opts.model_name}_change", quote(obj.pk))


# --- Teams, members and API keys -------------------------------------------------


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    raw_id_fields = ["user"]
    readonly_fields = ["created_at"]


class APIKeyInline(admin.TabularInline):
    """Keys of the team at a glance; new keys come from the form under the team page."""

    model = APIKey
    extra = 0
    fields = ["name", "prefix", "scope", "created_at", "last_used", "revoked_at"]
    readonly_fields = ["name", "prefix", "scope", "created_at", "last_used", "revoked_at"]
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


# Quota field -> (setting holding its default, unit).
QUOTA_FIELDS = {
    "max_capsules": ("WRENN_TEAM_MAX_CAPSULES", "capsules"),
    "max_vcpus": ("WRENN_TEAM_MAX_VCPUS", "vCPUs"),
    "max_memory_mb": ("WRENN_TEAM_MAX_MEMORY_MB", "MB"),
}


class TeamForm(forms.ModelForm):
    """Each quota field says what an empty one means now: the setting's default, with its value."""

    class Meta:
        model = Team
        fields = ["name", "slug", *QUOTA_FIELDS]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name, (setting, unit) in QUOTA_FIELDS.items():
            field = self.fields.get(name)
            if field is not None:
                default = getattr(settings, setting)
                field.help_text = f"Empty: the default, {default} {unit} ({setting}). 0 allows none."


def quota_summary(team: Team) -> str:
    """What the team holds against its quotas: "2 of 20 capsules, 3 of 32 vCPUs, 1536 of 32768 MB"."""
    quota, usage = quota_of(team), usage_of(team)
    return (
        f"{usage.capsules} of {quota.capsules} capsules, {usage.vcpus} of {quota.vcpus} vCPUs, "
        f"{usage.memory_mb} of {quota.memory_mb} MB"
    )


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    form = TeamForm
    list_display = ["name", "slug", "id", "member_count", "created_at"]
    search_fields = ["name", "slug", "id"]
    prepopulated_fields = {"slug": ["name"]}
    readonly_fields = ["id", "created_at", "quota_use"]
    fieldsets = [
        (None, {"fields": ["name", "slug", "id", "created_at"]}),
        (
            "Quotas",
            {
                "fields": [*QUOTA_FIELDS, "quota_use"],
                "description": "What the team's capsules may hold at once; paused capsules count "
                "until they are destroyed.",
            },
        ),
    ]
    inlines = [MembershipInline, APIKeyInline]

    @admin.display(description="in use")
    def quota_use(self, obj: Team) -> str:
        return "-" if obj._state.adding else quota_summary(obj)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Team]:
        return super().get_queryset(request).annotate(member_count=Count("memberships", distinct=True))

    @admin.display(description="members", ordering="member_count")
    def member_count(self, obj: Team) -> int:
        return int(getattr(obj, "member_count", 0))

    def get_urls(self) -> list[URLPattern]:
        return [object_url(self, "new-api-key", self.new_api_key_view, "new_api_key"), *super().get_urls()]

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: Any = None
    ) -> HttpResponse:
        context = {
            "can_add_api_key": self._can_add_api_key(request),
            "api_key_scopes": APIKey.Scope.choices,
            **(extra_context or {}),
        }
        return super().change_view(request, object_id, form_url, context)

    def _can_add_api_key(self, request: HttpRequest) -> bool:
        return self.admin_site.get_model_admin(APIKey).has_add_permission(request)

    def new_api_key_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        # Making a key is adding an API key, not changing the team.
        team = changeable_object(self, request, object_id, view_is_enough=True)
        if not self._can_add_api_key(request):
            raise PermissionDenied
        name = request.POST.get("name", "").strip()
        if not name:
            messages.error(request, "An API key needs a name.")
            return back_to_change_page(team)
        created_by = request.user if request.user.is_authenticated else None
        scope = request.POST.get("scope") or APIKey.Scope.FULL
        if scope not in APIKey.Scope.values:
            messages.error(request, f"{scope!r} is not an API key scope.")
            return back_to_change_page(team)
        name = name[: APIKey._meta.get_field("name").max_length]
        _, raw_key = create_api_key(
            team,
            name,
            created_by,
            scope,
            audit_actor=trail.user_actor(request.user),
            where=trail.where_from_request(request),
        )
        messages.success(request, api_key_message(raw_key))
        return back_to_change_page(team)


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
    list_display = ["prefix", "name", "team", "scope", "created_at", "last_used", "revoked_at"]
    list_filter = ["team", "scope", ("revoked_at", admin.EmptyFieldListFilter)]
    list_select_related = ["team"]
    search_fields = ["prefix", "name", "team__name"]
    actions = ["revoke"]
    # key_hash appears nowhere: it is useless to a person and should not be copied around.
    # The scope is chosen when the key is made and stays: a key never gains power under its holder
    # (a key of another scope is a new key).
    add_fields = ("team", "name", "scope")
    change_fields = (
        "team",
        "name",
        "scope",
        "prefix",
        "created_by",
        "created_at",
        "last_used",
        "revoked_at",
    )
    change_readonly_fields = (
        "team",
        "scope",
        "prefix",
        "created_by",
        "created_at",
        "last_used",
        "revoked_at",
    )

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
        # In the transaction the admin wraps around the save.
        super().save_model(request, obj, form, change)
        record_created(obj, trail.user_actor(request.user), trail.where_from_request(request))
        messages.success(request, api_key_message(raw_key))

    @admin.action(description="Revoke selected API keys")
    def revoke(self, request: HttpRequest, queryset: QuerySet[APIKey]) -> None:
        where = trail.where_from_request(request)
        count = revoke_api_keys(queryset, audit_actor=trail.user_actor(request.user), where=where)
        self.message_user(request, f"Revoked {count} API key(s).", messages.SUCCESS)


# --- Hosts -----------------------------------------------------------------------


def age(moment: datetime | None, now: datetime) -> str:
    """How long before `now` the moment was: "12 s ago", "5 min ago", "3 h ago", "2 d ago" or "never"."""
    if moment is None:
        return "never"
    seconds = max(0, int((now - moment).total_seconds()))
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if seconds >= 2 * size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


# The parts of a host's isolation report in the order the issue names them; others follow, sorted
# (PostgreSQL's jsonb keeps keys in an order of its own).
ISOLATION_PARTS = ("network", "limits", "seccomp")


def isolation_parts(isolation: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    rank = {part: index for index, part in enumerate(ISOLATION_PARTS)}
    return sorted(isolation.items(), key=lambda item: (rank.get(item[0], len(rank)), item[0]))


def summarise_isolation(isolation: dict[str, Any] | None) -> str:
    """ "network on, limits off, seccomp on" from a host's isolation report."""
    if not isolation:
        return "not reported"
    return ", ".join(
        f"{part} {'on' if report.get('on') else 'off'}" for part, report in isolation_parts(isolation)
    )


class HostForm(forms.ModelForm):
    """Operators move a host between online and draining; only the monitor marks it unreachable."""

    class Meta:
        model = Host
        fields = ["address", "status"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        allowed = [Host.Status.ONLINE, Host.Status.DRAINING]
        if self.instance.pk is not None and self.instance.status == Host.Status.UNREACHABLE:
            # Keep the monitor's verdict selectable so that editing the address does not change it.
            allowed.insert(1, Host.Status.UNREACHABLE)
        field = self.fields.get("status")
        if isinstance(field, forms.ChoiceField):
            field.choices = [(status.value, status.label) for status in allowed]


@admin.register(Host)
class HostAdmin(admin.ModelAdmin):
    form = HostForm
    list_display = [
        "address",
        "status",
        "heartbeat",
        "running_count",
        "active_count",
        "runtime",
        "isolation_summary",
        "version",
        "created_at",
    ]
    list_filter = ["status"]
    search_fields = ["address"]
    actions = ["issue_token"]
    # token_hash appears nowhere; token_prefix tells tokens apart.
    fields = [
        "address",
        "status",
        "heartbeat",
        "last_heartbeat_at",
        "runtime",
        "isolation_detail",
        "version",
        "vcpus",
        "memory_mb",
        "token_prefix",
        "created_at",
    ]
    readonly_fields = [
        "heartbeat",
        "last_heartbeat_at",
        "runtime",
        "isolation_detail",
        "version",
        "vcpus",
        "memory_mb",
        "token_prefix",
        "created_at",
    ]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Host]:
        return (
            super()
            .get_queryset(request)
            .annotate(
                running_count=Count("sandboxes", filter=Q(sandboxes__status=Sandbox.Status.RUNNING)),
                active_count=Count("sandboxes", filter=~Q(sandboxes__status=Sandbox.Status.STOPPED)),
            )
        )

    @admin.display(description="heartbeat", ordering="last_heartbeat_at")
    def heartbeat(self, obj: Host) -> str:
        return age(obj.last_heartbeat_at, timezone.now())

    @admin.display(description="isolation")
    def isolation_summary(self, obj: Host) -> str:
        return summarise_isolation(obj.isolation)

    @admin.display(description="isolation")
    def isolation_detail(self, obj: Host) -> SafeString | str:
        """Each part the agent reported, with its reason (the agent's text, escaped)."""
        if not obj.isolation:
            return "not reported by this host's agent"
        rows = (
            (
                part,
                "on" if report.get("on") else "off",
                f" — {report['reason']}" if report.get("reason") else "",
            )
            for part, report in isolation_parts(obj.isolation)
        )
        return format_html(
            '<ul class="isolation">{}</ul>', format_html_join("", "<li><b>{}</b> {}{}</li>", rows)
        )

    @admin.display(description="running capsules", ordering="running_count")
    def running_count(self, obj: Host) -> int:
        return int(getattr(obj, "running_count", 0))

    @admin.display(description="capsules (not stopped)", ordering="active_count")
    def active_count(self, obj: Host) -> int:
        return int(getattr(obj, "active_count", 0))

    @admin.action(description="Issue a new agent token (replaces the old one)", permissions=["change"])
    def issue_token(self, request: HttpRequest, queryset: QuerySet[Host]) -> None:
        for host in queryset.order_by("address"):
            self._issue_token(request, host)

    def get_urls(self) -> list[URLPattern]:
        return [object_url(self, "issue-token", self.issue_token_view, "issue_token"), *super().get_urls()]

    def save_model(self, request: HttpRequest, obj: Host, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        # A new host needs a token before its agent can report in.
        if not change:
            self._issue_token(request, obj)

    def issue_token_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        host = changeable_object(self, request, object_id)
        self._issue_token(request, host)
        return back_to_change_page(host)

    def _issue_token(self, request: HttpRequest, host: Host) -> None:
        raw_token = issue_host_token(host)
        control_plane = request.build_absolute_uri("/").rstrip("/")
        messages.success(
            request,
            f"The new token for {host.address} is {raw_token} — {SHOWN_ONCE} "
            f"Save it in a file only the agent can read and start the agent with: "
            f"python -m hostagent --listen {host.address} --control-plane {control_plane} "
            f"--register-token-file {AGENT_CREDENTIAL_FILE}",
        )


# --- Capsules --------------------------------------------------------------------


class SandboxCreateForm(forms.ModelForm):
    """Creating a capsule means starting it on a host: `create_capsule` does both.

    It runs while the form is cleaned so that a refusal (no host, host down) comes
    back as a form error with the entered values kept.
    """

    template = forms.ChoiceField(choices=[(name, name) for name in TEMPLATES], initial=DEFAULT_TEMPLATE)
    created: Sandbox | None = None
    # Who creates it, for the audit trail: set by SandboxAdmin.get_form on the class it makes.
    audited: dict[str, Any] = {}

    class Meta:
        model = Sandbox
        fields = ["team", "template", "vcpus", "memory_mb", "timeout_sec", "metadata", "network"]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if self.errors:
            return cleaned
        try:
            self.created = create_capsule(
                cleaned["team"],
                template=cleaned.get("template") or None,
                vcpus=cleaned.get("vcpus"),
                memory_mb=cleaned.get("memory_mb"),
                timeout_sec=cleaned.get("timeout_sec"),
                metadata=cleaned.get("metadata") or None,
                network=cleaned.get("network"),
                **self.audited,
            )
        except ActionError as error:
            raise forms.ValidationError(error.message, code=error.code) from error
        return cleaned


class SandboxChangeForm(forms.ModelForm):
    """What an operator may change on an existing capsule, checked as the API checks it.

    A new network policy goes to the capsule's host agent while the form is cleaned, through the
    action the API calls, so that a refusal comes back as an error on the field and nothing is saved.
    """

    class Meta:
        model = Sandbox
        fields = ["timeout_sec", "metadata", "network"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Django compares a field with a callable default to a hidden copy of its initial value
        # sent back by the browser; the capsule's own policy is what a change is measured against.
        self.fields["network"].show_hidden_initial = False

    def clean_timeout_sec(self) -> int:
        return checked(clean_timeout, self.cleaned_data["timeout_sec"])

    def clean_metadata(self) -> dict[str, str]:
        metadata = self.cleaned_data["metadata"]
        return checked(clean_metadata, {} if metadata is None else metadata)

    def clean_network(self) -> dict[str, Any]:
        return checked(clean_network, self.cleaned_data["network"])

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if not self.errors and "network" in self.changed_data:
            try:
                set_network_policy(self.instance, cleaned["network"])
            except ActionError as error:
                self.add_error("network", f"not applied: {error.message}")
        return cleaned


def checked(check: Callable[[Any], Any], value: Any) -> Any:
    try:
        return check(value)
    except ValidationFailed as error:
        raise forms.ValidationError(error.message) from error


# verb -> (action function, past tense for the message)
LIFECYCLE: dict[str, tuple[Callable[..., Any], str]] = {
    "pause": (pause_capsule, "paused"),
    "resume": (resume_capsule, "resumed"),
    "destroy": (destroy_capsule, "destroyed"),
}


def run_lifecycle(request: HttpRequest, sandbox: Sandbox, verb: str) -> None:
    """Run one action on one capsule and say how it went, one line per capsule."""
    action, done = LIFECYCLE[verb]
    try:
        action(sandbox, **by_person(request))
    except ActionError as error:
        messages.error(request, f"{sandbox.id}: {error.message}")
    else:
        messages.success(request, f"{sandbox.id} {done}")


@admin.register(Sandbox)
class SandboxAdmin(admin.ModelAdmin):
    list_display = ["id", "team", "status", "host", "template", "created_at", "last_active_at", "terminal"]
    list_filter = ["status", "team"]
    list_select_related = ["team", "host"]
    search_fields = ["id"]
    date_hierarchy = "created_at"
    actions = ["pause", "resume", "destroy"]
    add_fields = ("team", "template", "vcpus", "memory_mb", "timeout_sec", "metadata", "network")
    change_fields = (
        "id",
        "team",
        "status",
        "status_before_missing",
        "host",
        "template",
        "vcpus",
        "memory_mb",
        "disk_size_mb",
        "timeout_sec",
        "metadata",
        "network",
        "oom_kills",
        "recent_events",
        "created_at",
        "started_at",
        "last_active_at",
        "last_updated",
    )
    # Status changes only through the actions; team, host and size are fixed at creation.
    change_readonly_fields = tuple(
        f for f in change_fields if f not in ("timeout_sec", "metadata", "network")
    )

    @admin.display(description="terminal")
    def terminal(self, obj: Sandbox) -> SafeString:
        return format_html('<a href="{}">open terminal</a>', terminal_path(obj.id))

    @admin.display(description="events (newest first)")
    def recent_events(self, obj: Sandbox) -> SafeString | str:
        events = [event for event in obj.events if isinstance(event, dict)]
        if not events:
            return "none"
        rows = ((e.get("at", ""), e.get("kind", ""), e.get("message", "")) for e in reversed(events))
        return format_html(
            '<ul class="capsule-events">{}</ul>',
            format_html_join("", "<li><time>{}</time> <b>{}</b>: {}</li>", rows),
        )

    def get_fields(self, request: HttpRequest, obj: Sandbox | None = None) -> tuple[str, ...]:
        return self.add_fields if obj is None else self.change_fields

    def get_readonly_fields(self, request: HttpRequest, obj: Sandbox | None = None) -> tuple[str, ...]:
        return () if obj is None else self.change_readonly_fields

    def get_form(
        self, request: HttpRequest, obj: Sandbox | None = None, change: bool = False, **kwargs: Any
    ) -> Any:
        kwargs["form"] = SandboxCreateForm if obj is None else SandboxChangeForm
        form = super().get_form(request, obj, change, **kwargs)
        if obj is None:
            # A class of this request's own (modelform_factory made it), so the attribute is too.
            form.audited = by_person(request)  # type: ignore[attr-defined]  # SandboxCreateForm's
        return form

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        if request.method == "POST":
            # create_capsule commits each of its steps and holds no lock across the call to the
            # agent, and set_network_policy commits once the agent has the policy; the transaction
            # the admin wraps around a save would hold their locks to its end, and a rollback there
            # would forget a policy the agent already enforces.
            # _changeform_view is what changeform_view runs inside its transaction (not in the stubs).
            return self._changeform_view(request, object_id, form_url, extra_context)  # type: ignore[attr-defined]
        return super().changeform_view(request, object_id, form_url, extra_context)

    def save_form(self, request: HttpRequest, form: Any, change: bool) -> Any:
        instance = super().save_form(request, form, change)
        if not change and isinstance(form, SandboxCreateForm) and form.created is not None:
            return form.created
        return instance

    def save_model(self, request: HttpRequest, obj: Sandbox, form: Any, change: bool) -> None:
        # A new capsule was saved by create_capsule when the form was cleaned, and a new network
        # policy by set_network_policy. A change writes only the other edited fields, so that it
        # never puts back a status an action set meanwhile.
        if not change:
            return
        edited = [name for name in form.changed_data if name != "network"]
        if edited:
            obj.save(update_fields=[*edited, "last_updated"])
        if "network" in form.changed_data:
            messages.info(request, f"{obj.id}: the new network policy is applied on its host")

    def has_delete_permission(self, request: HttpRequest, obj: Sandbox | None = None) -> bool:
        # Deleting the row of a live capsule would orphan its processes: destroy it first.
        if obj is not None and obj.status != Sandbox.Status.STOPPED:
            return False
        return super().has_delete_permission(request, obj)

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    def _run_each(self, request: HttpRequest, queryset: QuerySet[Sandbox], verb: str) -> None:
        for sandbox in queryset.select_related("host", "team").order_by("id"):
            run_lifecycle(request, sandbox, verb)

    @admin.action(description="Pause selected capsules", permissions=["change"])
    def pause(self, request: HttpRequest, queryset: QuerySet[Sandbox]) -> None:
        self._run_each(request, queryset, "pause")

    @admin.action(description="Resume selected capsules", permissions=["change"])
    def resume(self, request: HttpRequest, queryset: QuerySet[Sandbox]) -> None:
        self._run_each(request, queryset, "resume")

    @admin.action(description="Destroy selected capsules", permissions=["change"])
    def destroy(self, request: HttpRequest, queryset: QuerySet[Sandbox]) -> None:
        self._run_each(request, queryset, "destroy")

    def get_urls(self) -> list[URLPattern]:
        buttons = [object_url(self, verb, self.lifecycle_view, verb, verb=verb) for verb in LIFECYCLE]
        kill = object_url(self, "terminal-sessions/<str:tag>/kill", self.kill_terminal_view, "kill_terminal")
        return [*buttons, kill, *super().get_urls()]

    def lifecycle_view(self, request: HttpRequest, object_id: str, verb: str) -> HttpResponse:
        sandbox = changeable_object(self, request, object_id)
        run_lifecycle(request, sandbox, verb)
        return back_to_change_page(sandbox)

    def kill_terminal_view(self, request: HttpRequest, object_id: str, tag: str) -> HttpResponse:
        sandbox = changeable_object(self, request, object_id)
        try:
            kill_terminal_session(sandbox, tag)
        except ActionError as error:
            messages.error(request, f"{sandbox.id}: {error.message}")
        else:
            messages.success(request, f"{sandbox.id}: terminal session {tag} killed")
        return back_to_change_page(sandbox)

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: Any = None
    ) -> HttpResponse:
        context = dict(extra_context or {})
        sandbox = self.get_object(request, unquote(object_id))
        # Only pages that are shown ask the host; a successful save just redirects.
        if sandbox is not None and request.method != "POST":
            context.update(self._terminal_context(sandbox))
        return super().change_view(request, object_id, form_url, context)

    def _terminal_context(self, sandbox: Sandbox) -> dict[str, Any]:
        context: dict[str, Any] = {
            "terminal_url": terminal_path(sandbox.id),
            "lifecycle_verbs": list(LIFECYCLE),
        }
        try:
            context["terminal_sessions"] = list_terminal_sessions(sandbox)
        except ActionError as error:
            context["terminal_sessions_error"] = f"terminal sessions unavailable: {error.message}"
        return context


# Registered with the admin on import: the terminal sessions across capsules.
from capsules import admin_terminals  # noqa: E402, F401
