"""A recording's files go with its rows however they go: retention, or a capsule or team deleted
(the rows cascade; without this the files would stay in the storage with nothing naming them)."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models.signals import post_delete
from django.dispatch import receiver

from recordings import store
from recordings.models import RecordingChunk


@receiver(post_delete, sender=RecordingChunk)
def delete_chunk_file(sender: type[RecordingChunk], instance: RecordingChunk, **kwargs: Any) -> None:
    # Once the deletion is committed: a rolled-back one keeps its files.
    name = instance.name
    transaction.on_commit(lambda: store.storage().delete(name))
