"""A recording's chunks in the recordings storage: stored once each, read back in order."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.utils import timezone

from capsules.models import Sandbox, Team
from recordings import store
from recordings.models import Recording

pytestmark = pytest.mark.django_db


@pytest.fixture
def recording(settings, tmp_path: Path) -> Recording:
    settings.STORAGES = {
        **settings.STORAGES,
        "recordings": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path)},
        },
    }
    team = Team.objects.create(name="Rec", slug="rec")
    capsule = Sandbox.objects.create(team=team)
    return Recording.objects.create(sandbox=capsule, team=team, tag="pty-0a1b2c3d", started_at=timezone.now())


def test_chunks_read_back_in_order_whatever_order_they_came(recording: Recording) -> None:
    store.save_chunk(recording, 1, b'[0.5, "o", "world"]\n', offset=5, time=0.5)
    store.save_chunk(recording, 0, b'{"version": 2}\n[0.1, "o", "hello"]\n', offset=0, time=0.1)
    assert b"".join(store.read_cast(recording)) == (
        b'{"version": 2}\n[0.1, "o", "hello"]\n[0.5, "o", "world"]\n'
    )
    recording.refresh_from_db()
    assert recording.bytes == 55


def test_a_chunk_sent_twice_is_kept_once(recording: Recording) -> None:
    first = store.save_chunk(recording, 0, b"first\n", offset=0, time=0.0)
    again = store.save_chunk(recording, 0, b"second\n", offset=0, time=0.0)
    assert again.pk == first.pk
    assert b"".join(store.read_cast(recording)) == b"first\n"
    assert Recording.objects.get(pk=recording.pk).bytes == 6


def test_deleting_the_files_leaves_nothing_in_the_storage(recording: Recording, tmp_path: Path) -> None:
    store.save_chunk(recording, 0, b"x\n", offset=0, time=0.0)
    store.delete_files(recording)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []
