"""The playback page of a terminal recording (the asciinema player, from npm) and the `.cast` it
loads, on the person's session.

A recording is reachable by the members of its capsule's team, and by staff allowed to view
recordings (who reach them from the admin's capsule page); for anybody else it answers exactly like
a missing one. A session still running is played as far as it is stored.
"""

from collections.abc import AsyncIterator, Iterator
from typing import Any

from asgiref.sync import sync_to_async
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, HttpResponseBase, StreamingHttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from capsules.services import find_capsule
from home import links
from protos.rules import is_tag
from recordings import store
from recordings.access import can_view_any
from recordings.models import Recording

CAST_CONTENT_TYPE = "application/x-asciicast"
NOT_FOUND = 404
FORBIDDEN = 403


def visible_recording(user: Any, capsule_id: str, tag: str) -> Recording | None:
    """The recording of session `tag` of capsule `capsule_id`, if `user` may see it."""
    if not is_tag(tag):
        return None
    capsule = find_capsule(capsule_id, user=user)
    if capsule is None and can_view_any(user):
        capsule = find_capsule(capsule_id, any_team=True)
    if capsule is None:
        return None
    return Recording.objects.filter(sandbox=capsule, tag=tag).first()


def _missing(capsule_id: str, tag: str) -> str:
    return f"recording {capsule_id[:64]}/{tag[:64]} not found"


@login_required
@require_GET
def recording_play(request: HttpRequest, capsule_id: str, tag: str) -> HttpResponse:
    recording = visible_recording(request.user, capsule_id, tag)
    if recording is None:
        return render(
            request, "home/not_found.html", {"message": _missing(capsule_id, tag)}, status=NOT_FOUND
        )
    context: dict[str, Any] = {
        "recording": recording,
        "live": recording.ended_at is None,
        "cast_url": links.recording_cast(recording.sandbox_id, recording.tag),
        "download_url": links.download_recording(recording.sandbox_id, recording.tag),
        "text_url": links.recording_text(recording.sandbox_id, recording.tag),
        "terminal_url": links.watch_terminal(recording.sandbox_id, recording.tag),
    }
    return render(request, "home/playback.html", context)


async def _pieces(pieces: Iterator[bytes]) -> AsyncIterator[bytes]:
    """`pieces` read one at a time in a worker thread: daphne sends each as it comes, where a
    synchronous iterator would be read whole into memory first."""
    step = sync_to_async(_next_piece)
    while (piece := await step(pieces)) is not None:
        yield piece


def _next_piece(pieces: Iterator[bytes]) -> bytes | None:
    return next(pieces, None)


@require_GET
def recording_cast(request: HttpRequest, capsule_id: str, tag: str) -> HttpResponseBase:
    """The `.cast` as it is stored so far (a live session's grows), for the playback page."""
    if not request.user.is_authenticated:
        # A data route: no redirect to the login page, which a script would take for the recording.
        return HttpResponse(
            "sign in to play recordings\n", status=FORBIDDEN, content_type="text/plain; charset=utf-8"
        )
    recording = visible_recording(request.user, capsule_id, tag)
    if recording is None:
        return HttpResponse(
            f"{_missing(capsule_id, tag)}\n", status=NOT_FOUND, content_type="text/plain; charset=utf-8"
        )
    response = StreamingHttpResponse(_pieces(store.read_cast(recording)), content_type=CAST_CONTENT_TYPE)
    # What is stored changes while the session runs.
    response["Cache-Control"] = "no-store"
    return response
