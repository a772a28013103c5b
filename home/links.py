"""The paths the people's pages link to, built in one place.

The terminal page (pty app) reads `tag`, `mode=observer` and `new=1` from its query string; the
REST API serves a recording's `.cast` and its text (recordings app) and accepts the session too.
"""

from urllib.parse import urlencode

from django.urls import reverse

from capsules.services import terminal_path


def open_terminal(capsule_id: str, tag: str) -> str:
    return f"{terminal_path(capsule_id)}?{urlencode({'tag': tag})}"


def watch_terminal(capsule_id: str, tag: str) -> str:
    return f"{terminal_path(capsule_id)}?{urlencode({'tag': tag, 'mode': 'observer'})}"


def new_terminal(capsule_id: str) -> str:
    return f"{terminal_path(capsule_id)}?new=1"


def play_recording(capsule_id: str, tag: str) -> str:
    return reverse("recording-play", args=[capsule_id, tag])


def recording_cast(capsule_id: str, tag: str) -> str:
    return reverse("recording-cast", args=[capsule_id, tag])


def download_recording(capsule_id: str, tag: str) -> str:
    return f"/v1/capsules/{capsule_id}/recordings/{tag}"


def recording_text(capsule_id: str, tag: str) -> str:
    return f"{download_recording(capsule_id, tag)}/text"
