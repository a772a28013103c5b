"""Taking a recording in: its row when the session starts, and the chunks the host agent pushes.

The row is made by whichever comes first, the terminal's start (`session_started`, from
capsules.actions.record_terminal_started) or the agent's first chunk (`save`), and linked to
the session's TerminalSession. Chunks are stored once per seq (a retry is answered as the first
try was); the cap (WRENN_RECORDING_MAX_BYTES) is enforced here on the bytes actually received,
whatever the agent says, and a chunk that would cross it is refused and the recording marked
truncated.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import OperationalError, transaction
from django.db.models import OuterRef, Subquery
from django.utils import timezone

from capsules.models import Host, Sandbox, TerminalSession
from protos import rules
from recordings import store
from recordings.models import Recording

log = logging.getLogger(__name__)

# One chunk's body at most: the agent sends about 64 KiB of whole lines at a time, and one line
# (64 KiB of output, escaped) stays well under this.
CHUNK_MAX_BYTES = 1024 * 1024
MAX_SEQ = 10_000_000
MAX_HEADER = 4096
# The time of a line: `[12.345678, "o", ...]`.
_LINE_TIME = re.compile(rb"\[(\d{1,12}(?:\.\d{1,9})?)\s*,")


class Refused(Exception):
    """Why a chunk is not taken: `code` is the API's error code (the view picks the status)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class ChunkIn:
    seq: int
    data: bytes
    offset: int
    time: float
    final: bool = False
    exit_code: int | None = None


def max_bytes() -> int:
    return int(settings.WRENN_RECORDING_MAX_BYTES)


def _session_row(sandbox_id: str, tag: str) -> TerminalSession | None:
    return TerminalSession.objects.filter(sandbox_id=sandbox_id, tag=tag).first()


def _new_recording(sandbox: Sandbox, tag: str, started_at: datetime) -> Recording:
    row = _session_row(sandbox.pk, tag)
    recording, _created = Recording.objects.get_or_create(
        sandbox=sandbox,
        tag=tag,
        defaults={
            "team_id": sandbox.team_id,
            "session": row,
            "started_by": row.started_by if row else "",
            "command": row.command if row else "",
            "started_at": row.started_at if row else started_at,
            "input_recorded": sandbox.team.record_input,
        },
    )
    return recording


def session_started(sandbox_id: str, tag: str) -> None:
    """The terminal `tag` started (its TerminalSession row is written): its recording's row, if
    the team records terminals, linked to the session."""
    sandbox = Sandbox.objects.select_related("team").filter(pk=sandbox_id).first()
    if sandbox is None or not sandbox.team.record_terminals:
        return
    recording = _new_recording(sandbox, tag, timezone.now())
    row = _session_row(sandbox_id, tag)
    if row is not None and (recording.session_id != row.pk or not recording.started_by):
        recording.session = row
        recording.started_by = row.started_by
        recording.command = recording.command or row.command
        recording.save(update_fields=["session", "started_by", "command"])


def check_chunk(tag: str, chunk: ChunkIn) -> None:
    if not rules.is_tag(tag):
        raise Refused("invalid_request", rules.bad_tag(tag))
    if not 0 <= chunk.seq <= MAX_SEQ:
        raise Refused("invalid_request", f"seq must be between 0 and {MAX_SEQ}")
    if chunk.offset < 0:
        raise Refused("invalid_request", "offset must be 0 or more")
    if not math.isfinite(chunk.time) or chunk.time < 0:
        raise Refused("invalid_request", "time must be a number of seconds, 0 or more")
    if len(chunk.data) > CHUNK_MAX_BYTES:
        raise Refused("too_large", f"a chunk must be at most {CHUNK_MAX_BYTES} bytes")
    if chunk.data and not chunk.data.endswith(b"\n"):
        raise Refused("invalid_request", "a chunk must be whole asciicast lines, ending with a newline")
    if not chunk.data and not chunk.final:
        raise Refused("invalid_request", "only the final chunk may be empty")
    if chunk.seq == 0 and chunk.data and _header(chunk.data) is None:
        raise Refused("invalid_request", "chunk 0 must begin with an asciicast v2 header line")


def _header(data: bytes) -> dict[str, object] | None:
    first = data[:MAX_HEADER].split(b"\n", 1)[0]
    try:
        header = json.loads(first)
    except ValueError:
        return None
    if not isinstance(header, dict) or header.get("version") != 2:
        return None
    return header


def _last_time(data: bytes) -> float | None:
    lines = data.rstrip(b"\n").rsplit(b"\n", 1)
    match = _LINE_TIME.match(lines[-1])
    return float(match.group(1)) if match else None


def _apply_header(recording: Recording, header: dict[str, object]) -> None:
    for field, name in (("width", "width"), ("height", "height")):
        value = header.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= rules.MAX_WINDOW:
            setattr(recording, field, value)
    title = header.get("title")
    if isinstance(title, str):
        recording.title = title[:200]
    command = header.get("command")
    if isinstance(command, str) and not recording.command:
        recording.command = command[:500]


def save(host: Host, sandbox_id: str, tag: str, chunk: ChunkIn) -> Recording:
    """Stores chunk `seq` of `sandbox_id`/`tag` sent by `host`'s agent (Refused when it may not)."""
    check_chunk(tag, chunk)
    sandbox = Sandbox.objects.select_related("team").filter(pk=sandbox_id, host=host).first()
    if sandbox is None:
        raise Refused("not_found", f"capsule {sandbox_id[:64]} is not on this host")
    recording = Recording.objects.filter(sandbox=sandbox, tag=tag).first()
    if recording is not None and recording.chunks.filter(seq=chunk.seq).exists():
        _finish(recording, chunk)
        return recording  # a retry: the first one stands
    if not sandbox.team.record_terminals:
        raise Refused("conflict", "recording is turned off for this capsule's team")
    if recording is None:
        started = timezone.now() - timedelta(seconds=min(chunk.time, 86400 * 366))
        try:
            recording = _new_recording(sandbox, tag, started)
        except OperationalError:
            # The terminal's start makes the same row in its own transaction, which holds its
            # session row; PostgreSQL may end this side as a deadlock. Once that start has
            # committed, the row is there to take.
            log.info("recording %s/%s: made by its start meanwhile; taking that one", sandbox_id, tag)
            recording = _new_recording(sandbox, tag, started)
    with transaction.atomic():
        locked = Recording.objects.select_for_update().get(pk=recording.pk)
        over_cap = bool(chunk.data) and locked.bytes + len(chunk.data) > max_bytes()
        if over_cap:
            locked.truncated = True
            locked.save(update_fields=["truncated"])
        elif chunk.data:
            store.save_chunk(locked, chunk.seq, chunk.data, offset=chunk.offset, time=chunk.time)
            header = _header(chunk.data) if chunk.seq == 0 else None
            if header is not None:
                _apply_header(locked, header)
            last = _last_time(chunk.data)
            locked.duration = max(locked.duration, last if last is not None else chunk.time)
            locked.save(update_fields=["width", "height", "title", "command", "duration"])
        if _truncation_marker(chunk.data):
            locked.truncated = True
            locked.save(update_fields=["truncated"])
        _finish(locked, chunk)
    if over_cap:
        raise Refused(
            "too_large",
            f"the recording would pass its size cap of {max_bytes()} bytes "
            f"(it holds {locked.bytes}); nothing more is kept",
        )
    return locked


def _truncation_marker(data: bytes) -> bool:
    # The agent's own marker when it stops at the cap (hostagent/recorder.py). Inside an event's
    # text every quote is escaped, so this can only be a marker line's own.
    return b', "m", "recording stopped: it reached its size cap' in data


def _finish(recording: Recording, chunk: ChunkIn) -> None:
    if not chunk.final or recording.ended_at is not None:
        return
    recording.ended_at = timezone.now()
    recording.exit_code = chunk.exit_code
    recording.save(update_fields=["ended_at", "exit_code"])


# How long after its session ended a recording may still get its final chunk (the agent pushes
# it within seconds; retries take longer while the control plane is away).
FINAL_GRACE = timedelta(minutes=2)


def close_abandoned(now: datetime | None = None) -> int:
    """Recordings whose session ended long enough ago but whose final chunk never came (the host
    agent was killed, or the control plane refused it) end when their session did, with no exit
    code; how many. What was stored stays as it is: a valid cast up to its last chunk."""
    now = now or timezone.now()
    ended = TerminalSession.objects.filter(pk=OuterRef("session_id")).values("ended_at")[:1]
    rows = Recording.objects.filter(ended_at__isnull=True, session__ended_at__lt=now - FINAL_GRACE)
    count = rows.update(ended_at=Subquery(ended))
    if count:
        log.info("%d recording(s) whose final chunk never came closed at their session's end", count)
    return count
