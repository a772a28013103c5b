"""What the host agent is told when a terminal starts: whether and how to record it."""

from __future__ import annotations

from channels.db import database_sync_to_async

from capsules.models import Team
from protos import hostagent_pb2 as pb
from recordings.ingest import max_bytes


def recording_for(team_id: str, sandbox_id: str, tag: str) -> pb.PtyRecording:
    """The team's choice (record terminals, and input too?) and the size cap, for `tag`'s start."""
    team = Team.objects.filter(pk=team_id).only("record_terminals", "record_input").first()
    if team is None or not team.record_terminals:
        return pb.PtyRecording(enabled=False)
    return pb.PtyRecording(
        enabled=True, input=team.record_input, max_bytes=max_bytes(), title=f"{sandbox_id} {tag}"
    )


arecording_for = database_sync_to_async(recording_for)
