"""The playback page and its `.cast` route: members of the capsule's team and staff allowed to view
recordings get them; anybody else gets what a missing recording gets; the cast is what is stored
so far, streamed, as application/x-asciicast."""

import uuid
import warnings
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.contrib.staticfiles import finders
from django.test import Client

from capsules.models import Sandbox
from recordings import store
from tests.home.conftest import TAG, cast_lines, make_recording

FIRST = cast_lines([0.5, "o", "first-line"], [1.5, "o", "\r\nsecond-line"])
SECOND = b'[2.5, "m", "checkpoint"]\n[3.5, "o", "\\r\\nthird-line"]\n'


def cast_of(response: Any) -> bytes:
    assert response.streaming
    with warnings.catch_warnings():
        # The test client reads the asynchronous body synchronously, which Django warns about;
        # daphne reads it as it is meant to be read.
        warnings.simplefilter("ignore")
        return b"".join(response)


def staff(username: str, *codenames: str) -> Client:
    user = get_user_model().objects.create_user(username=username, password="x", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    client = Client()
    client.force_login(user)
    return client


# The cast


def test_the_cast_is_every_chunk_in_order(client_of: Client, capsule: Sandbox) -> None:
    make_recording(capsule, TAG, FIRST, SECOND)
    response = client_of.get(f"/capsules/{capsule.pk}/recordings/{TAG}/cast")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/x-asciicast"
    assert response["Cache-Control"] == "no-store"
    assert cast_of(response) == FIRST + SECOND


def test_a_large_cast_comes_in_pieces(client_of: Client, capsule: Sandbox) -> None:
    big = cast_lines(*([n / 10, "o", "x" * 1000] for n in range(200)))
    make_recording(capsule, TAG, big)
    response = client_of.get(f"/capsules/{capsule.pk}/recordings/{TAG}/cast")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pieces = list(response)
    assert len(pieces) > 1
    assert all(len(piece) <= store.READ_SIZE for piece in pieces)
    assert b"".join(pieces) == big


def test_a_live_recording_is_served_as_far_as_it_is_stored(client_of: Client, capsule: Sandbox) -> None:
    recording = make_recording(capsule, TAG, FIRST, ended=False)
    path = f"/capsules/{capsule.pk}/recordings/{TAG}/cast"
    assert cast_of(client_of.get(path)) == FIRST
    store.save_chunk(recording, 1, SECOND, offset=len(FIRST), time=2.5)
    assert cast_of(client_of.get(path)) == FIRST + SECOND


def test_a_recording_with_nothing_stored_yet_is_empty(client_of: Client, capsule: Sandbox) -> None:
    make_recording(capsule, TAG, ended=False)
    response = client_of.get(f"/capsules/{capsule.pk}/recordings/{TAG}/cast")
    assert response.status_code == 200
    assert cast_of(response) == b""


def test_a_missing_recording_is_404(client_of: Client, capsule: Sandbox) -> None:
    response = client_of.get(f"/capsules/{capsule.pk}/recordings/{TAG}/cast")
    assert response.status_code == 404
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    assert response.content.decode() == f"recording {capsule.pk}/{TAG} not found\n"


def test_another_team_recording_answers_like_a_missing_one(
    client_of: Client, capsule: Sandbox, foreign_capsule: Sandbox
) -> None:
    make_recording(foreign_capsule, TAG, FIRST)
    foreign = client_of.get(f"/capsules/{foreign_capsule.pk}/recordings/{TAG}/cast")
    missing = client_of.get(f"/capsules/{capsule.pk}/recordings/{TAG}/cast")
    assert foreign.status_code == missing.status_code == 404
    assert foreign.content.decode() == f"recording {foreign_capsule.pk}/{TAG} not found\n"
    assert b"first-line" not in foreign.content


def test_a_recording_under_another_capsule_id_is_not_found(
    client_of: Client, capsule: Sandbox, foreign_capsule: Sandbox
) -> None:
    """The tag alone reaches nothing: the capsule in the path must be the recording's."""
    make_recording(foreign_capsule, TAG, FIRST)
    assert client_of.get(f"/capsules/{capsule.pk}/recordings/{TAG}/cast").status_code == 404


@pytest.mark.parametrize("tag", ["..", ".hidden", "pty-" + "a" * 60, "a b"])
def test_a_malformed_tag_is_not_found(client_of: Client, capsule: Sandbox, tag: str) -> None:
    assert client_of.get(f"/capsules/{capsule.pk}/recordings/{tag}/cast").status_code == 404


def test_an_anonymous_caller_is_refused_without_a_redirect(capsule: Sandbox) -> None:
    make_recording(capsule, TAG, FIRST)
    response = Client().get(f"/capsules/{capsule.pk}/recordings/{TAG}/cast")
    assert response.status_code == 403
    assert response.content.decode() == "sign in to play recordings\n"


def test_the_cast_takes_only_get(client_of: Client, capsule: Sandbox) -> None:
    make_recording(capsule, TAG, FIRST)
    assert client_of.post(f"/capsules/{capsule.pk}/recordings/{TAG}/cast").status_code == 405


def test_staff_allowed_to_view_recordings_get_any_team_cast(foreign_capsule: Sandbox) -> None:
    make_recording(foreign_capsule, TAG, FIRST)
    allowed = staff("auditor", "view_recording")
    response = allowed.get(f"/capsules/{foreign_capsule.pk}/recordings/{TAG}/cast")
    assert response.status_code == 200
    assert cast_of(response) == FIRST


def test_staff_without_the_permission_get_nothing_of_another_team(foreign_capsule: Sandbox) -> None:
    make_recording(foreign_capsule, TAG, FIRST)
    assert staff("ops").get(f"/capsules/{foreign_capsule.pk}/recordings/{TAG}/cast").status_code == 404


# The page


def test_the_page_names_the_cast_and_the_api_links(client_of: Client, capsule: Sandbox) -> None:
    make_recording(capsule, TAG, FIRST)
    response = client_of.get(f"/capsules/{capsule.pk}/recordings/{TAG}/")
    assert response.status_code == 200
    body = response.content.decode()
    assert f'data-cast-url="/capsules/{capsule.pk}/recordings/{TAG}/cast"' in body
    assert f'href="/v1/capsules/{capsule.pk}/recordings/{TAG}" download' in body
    assert f'href="/v1/capsules/{capsule.pk}/recordings/{TAG}/text"' in body
    assert "asciinema-player/asciinema-player.min.js" in body
    assert 'data-live="false"' in body


def test_the_page_of_a_live_recording_says_so(client_of: Client, capsule: Sandbox) -> None:
    make_recording(capsule, TAG, FIRST, ended=False)
    body = client_of.get(f"/capsules/{capsule.pk}/recordings/{TAG}/").content.decode()
    assert 'data-live="true"' in body
    assert 'id="reload"' in body
    assert f'href="/capsules/{capsule.pk}/terminal/?tag={TAG}&amp;mode=observer"' in body


def test_the_page_of_another_team_recording_answers_like_a_missing_one(
    client_of: Client, foreign_capsule: Sandbox
) -> None:
    make_recording(foreign_capsule, TAG, FIRST)
    foreign = client_of.get(f"/capsules/{foreign_capsule.pk}/recordings/{TAG}/")
    missing = client_of.get(f"/capsules/cl-{uuid.uuid4().hex[:20]}/recordings/{TAG}/")
    assert foreign.status_code == missing.status_code == 404
    assert f"recording {foreign_capsule.pk}/{TAG} not found" in foreign.content.decode()


def test_the_admin_capsule_page_links_to_playback(admin_client: Client, capsule: Sandbox) -> None:
    make_recording(capsule, TAG, FIRST)
    body = admin_client.get(f"/admin/capsules/sandbox/{capsule.pk}/change/").content.decode()
    assert f'class="play" href="/capsules/{capsule.pk}/recordings/{TAG}/"' in body


@pytest.mark.parametrize(
    "path",
    ["asciinema-player/asciinema-player.min.js", "asciinema-player/asciinema-player.css", "home/playback.js"],
)
def test_the_player_files_are_served_from_npm_and_the_app(path: str) -> None:
    assert finders.find(path) is not None, f"{path}: run `make setup` (npm ci)"
