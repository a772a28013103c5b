"""The signed-in person's page: their current team's capsules, terminals and recordings, and the
forms that create, pause, resume and destroy capsules through capsules.actions, as the API does.

Every form carries the team it was shown for; a team the person is not a member of, and a capsule
outside that team, answer exactly like missing ones. A refusal renders the page again with the
action's message and the status the API would answer.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Count, Prefetch, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from capsules import actions, states
from capsules.acting import by_person
from capsules.actions import ActionError
from capsules.api.errors import ACTION_STATUS
from capsules.models import Sandbox, Team, TerminalSession
from capsules.services import find_capsule
from capsules.validation import ValidationFailed
from home import links
from home.forms import CreateForm
from home.teams import current_team, member_team, remember, teams_of
from pty.roster import viewers_of
from recordings.models import Recording

log = logging.getLogger(__name__)
Status = Sandbox.Status
# Recordings listed under each capsule, newest first; the playback page reaches any of them.
RECENT_RECORDINGS = 10
# Stopped capsules stay listed (with their recordings) below the live ones, the newest few.
RECENT_STOPPED = 10
NOT_FOUND = 404
BAD_REQUEST = 400

Lifecycle = Callable[..., Sandbox]
LIFECYCLE: dict[str, tuple[Lifecycle, str]] = {
    "pause": (actions.pause_capsule, "paused"),
    "resume": (actions.resume_capsule, "resumed"),
    "destroy": (actions.destroy_capsule, "destroyed"),
}


@dataclass(frozen=True)
class SessionRow:
    tag: str
    command: str
    started_by: str
    viewers: int
    # Who watches, as the roster says ({"label", "mode", …}); None when it could not be read.
    watchers: list[dict[str, Any]] | None
    started_at: Any
    open_url: str
    watch_url: str
    recording_url: str | None


@dataclass(frozen=True)
class RecordingRow:
    tag: str
    command: str
    started_by: str
    started_at: Any
    duration: float
    bytes: int
    live: bool
    play_url: str
    download_url: str
    text_url: str


@dataclass(frozen=True)
class CapsuleRow:
    capsule: Sandbox
    sessions: list[SessionRow]
    recordings: list[RecordingRow]
    recording_count: int
    verbs: list[str]
    new_terminal_url: str | None


def verbs_for(status: str) -> list[str]:
    """The lifecycle buttons a capsule in `status` shows; the actions check again when pressed."""
    return [
        verb
        for verb, in_between in (
            ("pause", Status.PAUSING),
            ("resume", Status.RESUMING),
            ("destroy", Status.STOPPING),
        )
        if status in states.sources(in_between)
    ]


def recording_row(recording: Recording) -> RecordingRow:
    capsule_id, tag = recording.sandbox_id, recording.tag
    return RecordingRow(
        tag=tag,
        command=recording.command,
        started_by=recording.started_by,
        started_at=recording.started_at,
        duration=recording.duration,
        bytes=recording.bytes,
        live=recording.ended_at is None,
        play_url=links.play_recording(capsule_id, tag),
        download_url=links.download_recording(capsule_id, tag),
        text_url=links.recording_text(capsule_id, tag),
    )


def capsule_row(capsule: Any, rosters: dict[tuple[str, str], list[dict[str, Any]]] | None) -> CapsuleRow:
    recorded = {r.tag for r in capsule.recent_recordings}
    sessions = [
        SessionRow(
            tag=s.tag,
            command=s.command,
            started_by=s.started_by,
            viewers=s.viewers,
            watchers=None if rosters is None else rosters.get((capsule.pk, s.tag), []),
            started_at=s.started_at,
            open_url=links.open_terminal(capsule.pk, s.tag),
            watch_url=links.watch_terminal(capsule.pk, s.tag),
            recording_url=links.play_recording(capsule.pk, s.tag) if s.tag in recorded else None,
        )
        for s in capsule.live_sessions
    ]
    running = capsule.status == Status.RUNNING
    return CapsuleRow(
        capsule=capsule,
        sessions=sessions if capsule.status in states.WITH_PROCESSES else [],
        recordings=[recording_row(r) for r in capsule.recent_recordings],
        recording_count=capsule.recording_count,
        verbs=verbs_for(capsule.status),
        new_terminal_url=links.new_terminal(capsule.pk) if running else None,
    )


def team_capsules(team: Team) -> QuerySet[Sandbox]:
    return (
        Sandbox.objects.filter(team=team)
        .annotate(recording_count=Count("recordings"))
        .order_by("-created_at", "-pk")
        .prefetch_related(
            Prefetch(
                "terminal_sessions",
                queryset=TerminalSession.objects.filter(ended_at__isnull=True).order_by("started_at", "pk"),
                to_attr="live_sessions",
            ),
            Prefetch(
                "recordings",
                queryset=Recording.objects.order_by("-started_at", "-pk")[:RECENT_RECORDINGS],
                to_attr="recent_recordings",
            ),
        )
    )


def read_rosters(capsules: list[Any]) -> dict[tuple[str, str], list[dict[str, Any]]] | None:
    """Who watches each live session of these capsules (pty/roster.py); None when the roster
    cannot be read (Redis away): the page then shows the count the consumers keep in the row."""
    sessions = [(c.pk, s.tag) for c in capsules for s in c.live_sessions]
    try:
        return viewers_of(sessions)
    except Exception:
        log.warning("reading the rosters of %d terminal sessions failed", len(sessions), exc_info=True)
        return None


def render_home(
    request: HttpRequest,
    team: Team | None,
    *,
    error: str = "",
    status: int = 200,
    form: CreateForm | None = None,
) -> HttpResponse:
    capsules = team_capsules(team) if team is not None else Sandbox.objects.none()
    active = list(capsules.exclude(status=Status.STOPPED))
    rosters = read_rosters(active)
    context = {
        "team": team,
        "teams": teams_of(request.user),
        "error": error,
        "form": form or CreateForm.blank(),
        "capsules": [capsule_row(c, rosters) for c in active],
        "stopped": [capsule_row(c, {}) for c in capsules.filter(status=Status.STOPPED)[:RECENT_STOPPED]],
    }
    return render(request, "home/home.html", context, status=status)


def back_home(anchor: str = "") -> HttpResponseRedirect:
    return HttpResponseRedirect(reverse("home") + (f"#{anchor}" if anchor else ""))


def team_not_found(request: HttpRequest) -> HttpResponse:
    raw = str(request.POST.get("team", ""))[:64]
    return render_home(request, current_team(request), error=f"team {raw!r} not found", status=NOT_FOUND)


@login_required
@require_GET
def home(request: HttpRequest) -> HttpResponse:
    return render_home(request, current_team(request))


@login_required
@require_POST
def switch_team(request: HttpRequest) -> HttpResponse:
    team = member_team(request.user, request.POST.get("team"))
    if team is None:
        return team_not_found(request)
    remember(request, team)
    return back_home()


@login_required
@require_POST
def create_capsule(request: HttpRequest) -> HttpResponse:
    team = member_team(request.user, request.POST.get("team"))
    if team is None:
        return team_not_found(request)
    form = CreateForm.from_post(request.POST)
    try:
        capsule = actions.create_capsule(team, **by_person(request), **form.arguments())
    except ValidationFailed as exc:
        return render_home(request, team, error=exc.message, status=BAD_REQUEST, form=form)
    except ActionError as exc:
        return render_home(request, team, error=exc.message, status=ACTION_STATUS[exc.code], form=form)
    remember(request, team)
    messages.success(request, f"capsule {capsule.pk} created")
    return back_home(f"capsule-{capsule.pk}")


def lifecycle_view(verb: str) -> Callable[[HttpRequest, str], HttpResponse]:
    action, done = LIFECYCLE[verb]

    @login_required
    @require_POST
    def view(request: HttpRequest, capsule_id: str) -> HttpResponse:
        team = member_team(request.user, request.POST.get("team"))
        if team is None:
            return team_not_found(request)
        capsule = find_capsule(capsule_id, team_id=team.pk)
        if capsule is None:
            message = f"capsule {capsule_id[:64]!r} not found"
            return render_home(request, team, error=message, status=NOT_FOUND)
        try:
            action(capsule, **by_person(request))
        except ActionError as exc:
            error = f"{capsule.pk}: {exc.message}"
            return render_home(request, team, error=error, status=ACTION_STATUS[exc.code])
        remember(request, team)
        messages.success(request, f"capsule {capsule.pk} {done}")
        return back_home(f"capsule-{capsule.pk}")

    view.__name__ = f"{verb}_capsule"
    return view


pause_capsule = lifecycle_view("pause")
resume_capsule = lifecycle_view("resume")
destroy_capsule = lifecycle_view("destroy")
