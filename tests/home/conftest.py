"""Domain fixtures of the people's pages: a second team of the member's, a capsule in each of the
three teams, a signed-in member, and recordings built with recordings.store as the agent's are."""

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from capsules.models import Host, Membership, Sandbox, Team
from recordings import store
from recordings.models import Recording

Status = Sandbox.Status
TAG = "pty-0a1b2c3d"


@pytest.fixture(autouse=True)
def _recordings_in_tmp(settings: Any, tmp_path: Path) -> None:
    """Each test's recordings go to a directory of its own."""
    storages = dict(settings.STORAGES)
    storages["recordings"] = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(tmp_path / "recordings")},
    }
    settings.STORAGES = storages


@pytest.fixture
def host(db: None) -> Host:
    return Host.objects.create(address="127.0.0.1:50071")


@pytest.fixture
def second_team(member: Any) -> Team:
    """Another team the member belongs to."""
    team = Team.objects.create(name="Bravo", slug="bravo")
    Membership.objects.create(user=member, team=team)
    return team


def running_in(team: Team, host: Host, **fields: Any) -> Sandbox:
    return Sandbox.objects.create(
        team=team, host=host, status=Status.RUNNING, started_at=timezone.now(), **fields
    )


@pytest.fixture
def capsule(team: Team, host: Host) -> Sandbox:
    return running_in(team, host, vcpus=2, memory_mb=768)


@pytest.fixture
def second_capsule(second_team: Team, host: Host) -> Sandbox:
    return running_in(second_team, host, vcpus=3, memory_mb=1536)


@pytest.fixture
def foreign_capsule(other_team: Team, host: Host) -> Sandbox:
    """A capsule of a team the member is not in."""
    return running_in(other_team, host, vcpus=4, memory_mb=4096)


@pytest.fixture
def client_of(member: Any) -> Client:
    client = Client()
    client.force_login(member)
    return client


def cast_lines(*events: list[Any], width: int = 80, height: int = 24) -> bytes:
    header = {"version": 2, "width": width, "height": height, "timestamp": 1700000000, "command": "/bin/bash"}
    return b"".join(json.dumps(line).encode() + b"\n" for line in [header, *events])


def make_recording(capsule: Sandbox, tag: str = TAG, *chunks: bytes, ended: bool = True) -> Recording:
    now = timezone.now()
    recording = Recording.objects.create(
        sandbox=capsule,
        team_id=capsule.team_id,
        tag=tag,
        command="/bin/bash",
        started_by="user:alice",
        started_at=now - timedelta(seconds=30),
        ended_at=now if ended else None,
        duration=4.5,
    )
    offset = 0
    for seq, data in enumerate(chunks):
        store.save_chunk(recording, seq, data, offset=offset, time=float(seq))
        offset += len(data)
    return recording
