"""Recordings through the API: the host's chunk endpoint (with the cap enforced on what it receives),
the list, the `.cast` and its plain text, for team callers and signed-in members; every error."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.utils import timezone

from capsules.actions import record_terminal_started
from capsules.api.authentication import OBSERVE_ONLY
from capsules.hosts import issue_host_token
from capsules.keys import create_api_key
from capsules.models import APIKey, Host, Sandbox, Team, TerminalSession
from recordings import store
from recordings.ingest import close_abandoned
from recordings.models import Recording
from recordings.retention import purge_expired
from tests.api.contract import Contract, ContractClient
from tests.capsules import MEMBER_PASSWORD

pytestmark = pytest.mark.django_db

TAG = "pty-0a1b2c3d"
HEADER = (
    b'{"version": 2, "width": 100, "height": 30, "timestamp": 1796400000, "command": "/bin/bash", '
    b'"title": "t"}\n'
)


@pytest.fixture(autouse=True)
def storage_dir(settings: Any, tmp_path: Path) -> Path:
    location = tmp_path / "recordings"
    settings.STORAGES = {
        **settings.STORAGES,
        "recordings": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(location)},
        },
    }
    return location


@pytest.fixture
def rec_host() -> tuple[Host, str]:
    host = Host.objects.create(address="127.0.0.1:9")
    return host, issue_host_token(host)


@pytest.fixture
def live_capsule(team: Team, rec_host: tuple[Host, str]) -> Sandbox:
    """A row only: nothing here calls its agent."""
    return Sandbox.objects.create(
        team=team, host=rec_host[0], status=Sandbox.Status.RUNNING, started_at=timezone.now()
    )


@pytest.fixture
def agent_client(contract: Any, rec_host: tuple[Host, str]) -> ContractClient:
    return ContractClient(contract, HTTP_AUTHORIZATION=f"Bearer {rec_host[1]}")


def event(time: float, kind: str, data: str) -> bytes:
    return json.dumps([time, kind, data]).encode() + b"\n"


def push(
    client: ContractClient,
    capsule_id: str,
    seq: int,
    body: bytes,
    tag: str = TAG,
    **query: Any,
) -> Any:
    params = {"offset": 0, "time": 0.0, **query}
    url = f"/v1/hosts/recordings/{capsule_id}/{tag}/{seq}?" + "&".join(f"{k}={v}" for k, v in params.items())
    return client.generic("POST", url, body, content_type="application/x-asciicast")  # type: ignore[arg-type]


def body_of(response: Any) -> bytes:
    """A streamed body (an async iterator, as daphne serves it), read whole."""

    async def read() -> bytes:
        return b"".join([piece async for piece in response.streaming_content])

    return async_to_sync(read)()


COLOURED = (
    "\x1b]0;my title\x07\x1b[1;31mred\x1b[0m plain\r\n"
    "\x1b[2J\x1b[H\x1b[10;5Hmoved\x1b[K\r\n"
    "\x1b(Bcharset \x1b]8;;https://x\x1b\\link\x1b]8;;\x1b\\\r\n"
    "progress 10%\rprogress 100%\r\n\x1b[3"
)


@pytest.fixture
def recording(agent_client: ContractClient, live_capsule: Sandbox) -> Recording:
    first = HEADER + event(0.1, "o", COLOURED) + event(0.2, "r", "120x40")
    assert push(agent_client, live_capsule.pk, 0, first).status_code == 200
    second = event(0.3, "o", "2mgreen\x1b[0m\tdone\r\n") + event(0.4, "m", "kill")
    response = push(agent_client, live_capsule.pk, 1, second, offset=200, time=0.3, final=1, exit_code=3)
    assert response.status_code == 200
    return Recording.objects.get(sandbox=live_capsule, tag=TAG)


# --- the host's chunks --------------------------------------------------------------------------


def test_chunks_make_the_recording_with_its_header_duration_and_exit(recording: Recording) -> None:
    assert (recording.width, recording.height, recording.title, recording.command) == (
        100,
        30,
        "t",
        "/bin/bash",
    )
    assert recording.duration == pytest.approx(0.4)
    assert recording.exit_code == 3
    assert recording.ended_at is not None
    assert recording.chunks.count() == 2
    assert recording.bytes == sum(recording.chunks.values_list("size", flat=True))


def test_the_terminal_start_makes_the_row_and_links_its_session(
    live_capsule: Sandbox, agent_client: ContractClient
) -> None:
    record_terminal_started(live_capsule.pk, TAG, "user:alice", "/bin/bash -l", 42)
    recording = Recording.objects.get(sandbox=live_capsule, tag=TAG)
    assert recording.session is not None
    assert (recording.started_by, recording.command, recording.bytes) == ("user:alice", "/bin/bash -l", 0)
    assert push(agent_client, live_capsule.pk, 0, HEADER).status_code == 200
    assert Recording.objects.get(pk=recording.pk).bytes == len(HEADER)


def test_a_first_chunk_before_the_start_is_linked_when_the_session_row_comes(
    live_capsule: Sandbox, agent_client: ContractClient
) -> None:
    assert push(agent_client, live_capsule.pk, 0, HEADER).status_code == 200
    record_terminal_started(live_capsule.pk, TAG, "key:wrn_ab12cd34", "/bin/bash", 42)
    recording = Recording.objects.get(sandbox=live_capsule, tag=TAG)
    assert recording.session is not None
    assert recording.started_by == "key:wrn_ab12cd34"


def test_a_team_that_records_nothing_gets_no_row_and_chunks_are_refused(
    team: Team, live_capsule: Sandbox, agent_client: ContractClient
) -> None:
    team.record_terminals = False
    team.save()
    record_terminal_started(live_capsule.pk, TAG, "user:alice", "/bin/bash", 42)
    assert not Recording.objects.exists()
    response = push(agent_client, live_capsule.pk, 0, HEADER)
    assert response.status_code == 409
    assert response.json()["error"]["message"] == "recording is turned off for this capsule's team"
    assert not Recording.objects.exists()


def test_a_retried_chunk_is_kept_once(live_capsule: Sandbox, agent_client: ContractClient) -> None:
    assert push(agent_client, live_capsule.pk, 0, HEADER).status_code == 200
    again = push(agent_client, live_capsule.pk, 0, HEADER)
    assert again.status_code == 200
    assert again.json() == {"bytes": len(HEADER), "truncated": False}


def test_the_cap_is_enforced_on_the_bytes_received(
    settings: Any, live_capsule: Sandbox, agent_client: ContractClient, storage_dir: Path
) -> None:
    settings.WRENN_RECORDING_MAX_BYTES = 4096
    assert push(agent_client, live_capsule.pk, 0, HEADER).status_code == 200
    flood = event(0.5, "o", "y\r\n" * 2000)
    response = push(agent_client, live_capsule.pk, 1, flood, final=1, exit_code=0)
    assert response.status_code == 413
    assert response.json()["error"]["message"].startswith(
        "the recording would pass its size cap of 4096 bytes"
    )
    recording = Recording.objects.get(sandbox=live_capsule)
    assert recording.truncated
    assert recording.exit_code == 0  # the final chunk's exit is kept all the same
    stored = sum(p.stat().st_size for p in storage_dir.rglob("*") if p.is_file())
    assert stored == recording.bytes <= 4096


def test_the_agents_own_cap_marker_marks_the_row_truncated(
    live_capsule: Sandbox, agent_client: ContractClient
) -> None:
    marker = event(1.0, "m", "recording stopped: it reached its size cap of 4096 bytes")
    assert push(agent_client, live_capsule.pk, 0, HEADER + marker).status_code == 200
    assert Recording.objects.get(sandbox=live_capsule).truncated


def test_output_that_looks_like_the_cap_marker_does_not(
    live_capsule: Sandbox, agent_client: ContractClient
) -> None:
    fake = event(1.0, "o", '", "m", "recording stopped: it reached its size cap of 1 bytes"]')
    assert push(agent_client, live_capsule.pk, 0, HEADER + fake).status_code == 200
    assert not Recording.objects.get(sandbox=live_capsule).truncated


@pytest.mark.parametrize(
    ("seq", "body", "query", "status", "message"),
    [
        (0, b"no newline", {}, 400, "a chunk must be whole asciicast lines, ending with a newline"),
        (0, b'[0.1, "o", "x"]\n', {}, 400, "chunk 0 must begin with an asciicast v2 header line"),
        (1, b"", {}, 400, "only the final chunk may be empty"),
        (1, b"x\n", {"offset": -1}, 400, "offset must be 0 or more"),
        (1, b"x\n", {"offset": "ten"}, 400, "offset must be a number, got 'ten'"),
        (1, b"x\n", {"time": "nan"}, 400, "time must be a number of seconds, 0 or more"),
        (1, b"x\n", {"final": "yes"}, 400, "final must be 0 or 1"),
        (1, b"x\n", {"final": 1, "exit_code": 2**40}, 400, "exit_code must be a 32-bit integer"),
        (1, b"x" * (1024 * 1024) + b"\n", {}, 413, "a chunk must be at most 1048576 bytes"),
    ],
)
def test_malformed_chunks_are_refused_with_the_reason(
    live_capsule: Sandbox,
    agent_client: ContractClient,
    seq: int,
    body: bytes,
    query: dict[str, Any],
    status: int,
    message: str,
) -> None:
    response = push(agent_client, live_capsule.pk, seq, body, **query)
    assert response.status_code == status
    assert response.json()["error"]["message"] == message
    assert not Recording.objects.filter(bytes__gt=0).exists()


def test_a_bad_tag_is_refused(live_capsule: Sandbox, agent_client: ContractClient) -> None:
    response = push(agent_client, live_capsule.pk, 0, HEADER, tag="-bad")
    assert response.status_code == 400
    assert "invalid tag '-bad'" in response.json()["error"]["message"]


def test_chunks_need_the_hosts_token(client: ContractClient, live_capsule: Sandbox, contract: Any) -> None:
    for headers in ({}, {"HTTP_AUTHORIZATION": "Bearer wrh_not-a-real-token"}):
        response = push(ContractClient(contract, **headers), live_capsule.pk, 0, HEADER)
        assert response.status_code == 401
        assert response.json()["error"]["message"] == "invalid host token"


def test_a_host_cannot_write_another_hosts_capsule(
    live_capsule: Sandbox, contract: Any, rec_host: tuple[Host, str]
) -> None:
    other = Host.objects.create(address="127.0.0.1:10")
    client = ContractClient(contract, HTTP_AUTHORIZATION=f"Bearer {issue_host_token(other)}")
    response = push(client, live_capsule.pk, 0, HEADER)
    assert response.status_code == 404
    assert response.json()["error"]["message"] == f"capsule {live_capsule.pk} is not on this host"
    assert not Recording.objects.exists()


# --- playback -------------------------------------------------------------------------------------


def test_the_list_names_each_recording(team_client: ContractClient, recording: Recording) -> None:
    response = team_client.get(f"/v1/capsules/{recording.sandbox_id}/recordings")
    assert response.status_code == 200
    (listed,) = response.json()
    assert listed["tag"] == TAG
    assert (listed["exit_code"], listed["bytes"], listed["truncated"], listed["input_recorded"]) == (
        3,
        recording.bytes,
        False,
        False,
    )


def test_the_cast_is_the_chunks_in_order(team_client: ContractClient, recording: Recording) -> None:
    response = team_client.get(f"/v1/capsules/{recording.sandbox_id}/recordings/{TAG}")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/x-asciicast"
    assert response["X-Wrenn-Recording-Complete"] == "true"
    cast = body_of(response)
    assert cast == b"".join(store.read_cast(recording))
    lines = cast.split(b"\n")
    assert json.loads(lines[0])["version"] == 2
    assert [json.loads(line)[1] for line in lines[1:-1]] == ["o", "r", "o", "m"]


def test_a_live_recording_is_served_as_it_stands(
    key_client: ContractClient, live_capsule: Sandbox, agent_client: ContractClient
) -> None:
    push(agent_client, live_capsule.pk, 0, HEADER + event(0.1, "o", "so far"))
    response = key_client.get(f"/v1/capsules/{live_capsule.pk}/recordings/{TAG}")
    assert response["X-Wrenn-Recording-Complete"] == "false"
    assert body_of(response).endswith(b'"so far"]\n')


def test_the_text_has_no_escape_sequences(team_client: ContractClient, recording: Recording) -> None:
    response = team_client.get(f"/v1/capsules/{recording.sandbox_id}/recordings/{TAG}/text")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    assert body_of(response).decode() == (
        "red plain\nmoved\ncharset link\nprogress 10%\nprogress 100%\ngreen\tdone\n"
    )


def test_a_signed_in_member_reads_with_the_session_cookie(recording: Recording, member: Any) -> None:
    from django.test import Client

    browser = Client()
    assert browser.login(username="alice", password=MEMBER_PASSWORD)
    base = f"/v1/capsules/{recording.sandbox_id}/recordings"
    assert browser.get(base).status_code == 200
    assert browser.get(f"{base}/{TAG}").status_code == 200
    assert browser.get(f"{base}/{TAG}/text").status_code == 200


def test_a_signed_in_stranger_is_answered_as_for_a_missing_capsule(recording: Recording) -> None:
    from django.test import Client

    get_user_model().objects.create_user(username="mallory", password=MEMBER_PASSWORD)
    browser = Client()
    assert browser.login(username="mallory", password=MEMBER_PASSWORD)
    response = browser.get(f"/v1/capsules/{recording.sandbox_id}/recordings/{TAG}")
    assert response.status_code == 404
    assert response.json()["error"]["message"] == f"capsule {recording.sandbox_id} not found"


def test_staff_with_the_view_permission_read_any_teams_recording(recording: Recording) -> None:
    from django.contrib.auth.models import Permission
    from django.test import Client

    root = get_user_model().objects.create_user(username="root", password=MEMBER_PASSWORD, is_staff=True)
    browser = Client()
    assert browser.login(username="root", password=MEMBER_PASSWORD)
    text = f"/v1/capsules/{recording.sandbox_id}/recordings/{TAG}/text"
    # Staff alone is not enough: a recording can hold what was typed.
    refused = browser.get(text)
    assert refused.status_code == 404
    assert refused.json()["error"]["message"] == f"capsule {recording.sandbox_id} not found"
    root.user_permissions.add(Permission.objects.get(codename="view_recording"))
    assert browser.get(text).status_code == 200


def test_another_teams_capsule_answers_like_a_missing_one(
    contract: Any, other_api_key: str, recording: Recording
) -> None:
    theirs = ContractClient(contract, HTTP_X_API_KEY=other_api_key)
    for suffix in ("", f"/{TAG}", f"/{TAG}/text"):
        other = theirs.get(f"/v1/capsules/{recording.sandbox_id}/recordings{suffix}")
        missing = theirs.get(f"/v1/capsules/cl-0000000000000000/recordings{suffix}")
        assert other.status_code == missing.status_code == 404
        assert other.json()["error"]["message"] == f"capsule {recording.sandbox_id} not found"


def test_a_recording_that_does_not_exist_is_named(key_client: ContractClient, live_capsule: Sandbox) -> None:
    response = key_client.get(f"/v1/capsules/{live_capsule.pk}/recordings/pty-ffffffff/text")
    assert response.status_code == 404
    assert response.json()["error"]["message"] == (
        f"capsule {live_capsule.pk} has no recording of terminal session pty-ffffffff"
    )


def test_a_tag_that_cannot_be_one_is_refused(key_client: ContractClient, live_capsule: Sandbox) -> None:
    response = key_client.get(f"/v1/capsules/{live_capsule.pk}/recordings/-x")
    assert response.status_code == 400
    assert "invalid tag '-x'" in response.json()["error"]["message"]


def test_without_credentials_the_answer_says_what_to_send(
    client: ContractClient, recording: Recording
) -> None:
    response = client.get(f"/v1/capsules/{recording.sandbox_id}/recordings")
    assert response.status_code == 401
    assert response.json()["error"]["message"] == (
        "missing credentials: send X-API-Key, Authorization: Bearer, or sign in"
    )
    refused = ContractClient(client.contract, HTTP_X_API_KEY="wrn_nope").get(
        f"/v1/capsules/{recording.sandbox_id}/recordings"
    )
    assert refused.status_code == 401
    assert refused.json()["error"]["message"] == "invalid API key"


def test_a_recording_whose_final_chunk_never_came_ends_with_its_session(
    live_capsule: Sandbox, agent_client: ContractClient
) -> None:
    record_terminal_started(live_capsule.pk, TAG, "user:alice", "/bin/bash", 42)
    assert push(agent_client, live_capsule.pk, 0, HEADER).status_code == 200
    recording = Recording.objects.get(sandbox=live_capsule, tag=TAG)
    assert close_abandoned() == 0  # its session is still open
    ended = timezone.now() - timedelta(minutes=5)
    TerminalSession.objects.filter(recordings=recording).update(ended_at=ended)
    assert close_abandoned() == 1
    recording.refresh_from_db()
    assert (recording.ended_at, recording.exit_code) == (ended, None)


# --- retention ------------------------------------------------------------------------------------


def test_recordings_past_retention_go_with_their_files(
    settings: Any, team: Team, recording: Recording, storage_dir: Path, live_capsule: Sandbox
) -> None:
    settings.WRENN_RECORDING_RETENTION_DAYS = 30
    fresh = Recording.objects.create(
        sandbox=live_capsule, team=team, tag="pty-00000001", started_at=timezone.now()
    )
    store.save_chunk(fresh, 0, HEADER, offset=0, time=0.0)
    Recording.objects.filter(pk=recording.pk).update(started_at=timezone.now() - timedelta(days=31))
    old_files = [storage_dir / name for name in store.chunk_names(recording)]
    assert all(path.exists() for path in old_files)
    assert purge_expired() == 1
    assert not Recording.objects.filter(pk=recording.pk).exists()
    assert not any(path.exists() for path in old_files)
    assert Recording.objects.filter(pk=fresh.pk).exists()


def test_a_teams_own_retention_wins_and_the_command_applies_it(
    team: Team, recording: Recording, capsys: pytest.CaptureFixture[str]
) -> None:
    Recording.objects.filter(pk=recording.pk).update(started_at=timezone.now() - timedelta(days=3))
    call_command("purge_recordings")
    assert Recording.objects.filter(pk=recording.pk).exists()
    team.recording_retention_days = 2
    team.save()
    call_command("purge_recordings")
    assert "deleted 1 recording(s) past retention" in capsys.readouterr().out
    assert not Recording.objects.filter(pk=recording.pk).exists()


def test_deleting_a_capsule_deletes_its_recordings_files(
    recording: Recording, storage_dir: Path, django_capture_on_commit_callbacks: Any
) -> None:
    files = [storage_dir / name for name in store.chunk_names(recording)]
    assert all(path.exists() for path in files)
    with django_capture_on_commit_callbacks(execute=True):
        Sandbox.objects.filter(pk=recording.sandbox_id).delete()
    assert not any(path.exists() for path in files)


# --- every documented answer, produced for real (as tests/api/test_contract.py does) --------------


@pytest.fixture
def tour(openapi: dict[str, Any]) -> Contract:
    return Contract(openapi)


def crash(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every DRF view fail unexpectedly inside its request handling."""

    def explode(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr("rest_framework.views.APIView.initial", explode)


@pytest.mark.parametrize("suffix", ["", f"/{TAG}", f"/{TAG}/text"])
def test_every_playback_answer(
    tour: Contract, api_key: str, recording: Recording, monkeypatch: pytest.MonkeyPatch, suffix: str
) -> None:
    keyed, anonymous = ContractClient(tour, HTTP_X_API_KEY=api_key), ContractClient(tour)
    path = f"/v1/capsules/{recording.sandbox_id}/recordings{suffix}"
    template = "/v1/capsules/{capsule_id}/recordings" + suffix.replace(TAG, "{tag}")
    assert keyed.get(path).status_code == 200
    assert anonymous.get(path).status_code == 401
    assert keyed.get("/v1/capsules/cl-0000000000000000/recordings" + suffix).status_code == 404
    _, observe_key = create_api_key(recording.team, "watcher", scope=APIKey.Scope.TERMINAL_OBSERVE)
    observer = ContractClient(tour, HTTP_X_API_KEY=observe_key).get(path)
    assert observer.status_code == 403
    assert observer.json()["error"]["message"] == OBSERVE_ONLY
    if suffix:
        assert keyed.get(path.replace(TAG, "-x")).status_code == 400
    crash(monkeypatch)
    assert keyed.get(path).status_code == 500
    assert tour.seen_statuses(template, "get") == tour.statuses(template, "get")


def test_every_chunk_answer(
    tour: Contract,
    team: Team,
    live_capsule: Sandbox,
    rec_host: tuple[Host, str],
    monkeypatch: Any,
    settings: Any,
) -> None:
    agent = ContractClient(tour, HTTP_AUTHORIZATION=f"Bearer {rec_host[1]}")
    assert push(agent, live_capsule.pk, 0, HEADER).status_code == 200
    assert push(agent, live_capsule.pk, 1, b"no newline").status_code == 400
    assert push(ContractClient(tour), live_capsule.pk, 1, b"x\n").status_code == 401
    assert push(agent, "cl-0000000000000000", 0, HEADER).status_code == 404
    settings.WRENN_RECORDING_MAX_BYTES = 4096
    assert push(agent, live_capsule.pk, 1, b"x" * 5000 + b"\n").status_code == 413
    team.record_terminals = False
    team.save()
    assert push(agent, live_capsule.pk, 2, b"x\n").status_code == 409
    crash(monkeypatch)
    assert push(agent, live_capsule.pk, 3, b"x\n").status_code == 500
    template = "/v1/hosts/recordings/{capsule_id}/{tag}/{seq}"
    assert tour.seen_statuses(template, "post") == tour.statuses(template, "post")
