"""Where a recording's bytes live: one file per chunk in the "recordings" storage.

`save_chunk` stores what the agent sent, `read_cast` gives the `.cast` back as the chunks in
order, and `delete_files` removes a recording's files (retention, a deleted capsule). Only this
module knows the storage's file names, so a storage backend is swapped by a setting alone
(WRENN_RECORDINGS_STORAGE).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

from django.core.files.base import ContentFile
from django.core.files.storage import Storage, storages
from django.db import transaction

from recordings.models import Recording, RecordingChunk

READ_SIZE = 64 * 1024


def storage() -> Storage:
    return storages["recordings"]


def chunk_name(recording: Recording, seq: int) -> str:
    return f"{recording.team_id}/{recording.sandbox_id}/{recording.tag}/{seq:08d}.part"


def save_chunk(recording: Recording, seq: int, data: bytes, *, offset: int, time: float) -> RecordingChunk:
    """Stores chunk `seq` of the recording and adds its size to the recording's. A chunk sent
    again (the agent retries one whose answer it did not get) is kept once: the first one stands.
    """
    with transaction.atomic():
        locked = Recording.objects.select_for_update().get(pk=recording.pk)
        existing = RecordingChunk.objects.filter(recording=locked, seq=seq).first()
        if existing is not None:
            return existing
        name = storage().save(chunk_name(locked, seq), ContentFile(data))
        chunk = RecordingChunk.objects.create(
            recording=locked, seq=seq, offset=offset, time=time, size=len(data), name=name
        )
        locked.bytes += len(data)
        locked.save(update_fields=["bytes"])
    recording.bytes = locked.bytes
    return chunk


def read_cast(recording: Recording) -> Iterator[bytes]:
    """The recording's `.cast` as it stands, in pieces of at most READ_SIZE bytes."""
    files = storage()
    for name in recording.chunks.order_by("seq").values_list("name", flat=True):
        with files.open(name, "rb") as part:
            while piece := part.read(READ_SIZE):
                yield piece


def chunk_names(recording: Recording) -> list[str]:
    """The recording's files in order, as they stand now (a live one gets more later)."""
    return list(recording.chunks.order_by("seq").values_list("name", flat=True))


async def aread_files(names: list[str]) -> AsyncIterator[bytes]:
    """The files' bytes in order, in pieces of at most READ_SIZE, read in a thread (a storage
    may be a slow disk or an object store) so the event loop never waits on it."""
    files = storage()
    for name in names:
        part = await asyncio.to_thread(files.open, name, "rb")
        try:
            while piece := await asyncio.to_thread(part.read, READ_SIZE):
                yield piece
        finally:
            part.close()


def delete_files(recording: Recording) -> None:
    """Removes the recording's files; its rows go with the recording's deletion."""
    files = storage()
    for name in recording.chunks.values_list("name", flat=True):
        files.delete(name)
