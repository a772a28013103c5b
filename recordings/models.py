"""A terminal session's recording: asciicast v2, written by the host agent as the session runs.

The agent sends the recording in chunks (each a run of whole asciicast lines; the first begins
with the header line), and each chunk is one file in Django's storage (settings.STORAGES
"recordings"), so any storage backend works, an object store included, with nothing appended in
place. The `.cast` is the chunks in order. A chunk also says where it starts in the session's
output (`offset`, in bytes) and in time (`time`, seconds since the session started): the map
from byte offsets to event times.
"""

from __future__ import annotations

from django.db import models

from capsules.models import Sandbox, Team, TerminalSession


class Recording(models.Model):
    sandbox = models.ForeignKey(Sandbox, on_delete=models.CASCADE, related_name="recordings")
    # Kept beside the capsule's for retention, which is per team.
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="recordings")
    tag = models.CharField(max_length=64)
    session = models.ForeignKey(
        TerminalSession, on_delete=models.SET_NULL, null=True, blank=True, related_name="recordings"
    )
    # As the terminal session row says them ("user:alice", "/bin/bash -l").
    started_by = models.CharField(max_length=200, blank=True)
    command = models.CharField(max_length=500, blank=True)
    title = models.CharField(max_length=200, blank=True)
    # The terminal's size when the session started (the header's width and height).
    width = models.PositiveIntegerField(default=80)
    height = models.PositiveIntegerField(default=24)
    started_at = models.DateTimeField()
    ended_at = models.DateTimeField(null=True, blank=True)
    exit_code = models.IntegerField(null=True, blank=True)
    # Bytes of the .cast stored so far, and seconds from the session's start to its last event.
    bytes = models.BigIntegerField(default=0)
    duration = models.FloatField(default=0.0)
    # Whether `i` (input) events are in it: only when the team turned input recording on.
    input_recorded = models.BooleanField(default=False)
    # The size cap (WRENN_RECORDING_MAX_BYTES) was reached: nothing after that point was kept.
    truncated = models.BooleanField(default=False)

    class Meta:
        ordering = ["-started_at", "-pk"]
        constraints = [models.UniqueConstraint(fields=["sandbox", "tag"], name="one_recording_per_session")]
        indexes = [models.Index(fields=["team", "started_at"], name="recording_team_started")]

    def __str__(self) -> str:
        return f"{self.sandbox_id}/{self.tag}"


class RecordingChunk(models.Model):
    recording = models.ForeignKey(Recording, on_delete=models.CASCADE, related_name="chunks")
    # 0, 1, 2, … in the order the agent wrote them.
    seq = models.PositiveIntegerField()
    # Where the chunk starts: the session's output offset (bytes) and its time (seconds).
    offset = models.BigIntegerField(default=0)
    time = models.FloatField(default=0.0)
    size = models.PositiveIntegerField()
    # The file's name in the recordings storage.
    name = models.CharField(max_length=300)

    class Meta:
        ordering = ["recording", "seq"]
        constraints = [models.UniqueConstraint(fields=["recording", "seq"], name="one_chunk_per_seq")]

    def __str__(self) -> str:
        return f"{self.recording_id}#{self.seq}"
