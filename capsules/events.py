"""What happened to a capsule that its owner should see, kept on its row: the last EVENTS_KEPT
events, oldest first, each `{"at": ISO 8601 time, "kind": …, "message": …}`.

Kinds: `oom_kill`, the out-of-memory killer ended processes of the capsule (its host counts them
in every heartbeat, see capsules/hosts.py).
"""

import logging
from datetime import datetime
from typing import Any

from capsules.models import Host, Sandbox

log = logging.getLogger(__name__)

EVENTS_KEPT = 50
OOM_KILL = "oom_kill"


def new_event(kind: str, message: str, at: datetime) -> dict[str, str]:
    return {"at": at.isoformat(), "kind": kind, "message": message}


def with_event(events: Any, event: dict[str, str]) -> list[Any]:
    """`events` with `event` last, the oldest dropped beyond EVENTS_KEPT."""
    earlier = events if isinstance(events, list) else []
    return [*earlier, event][-EVENTS_KEPT:]


def oom_kill_message(killed: int, memory_mb: int) -> str:
    processes = "1 process" if killed == 1 else f"{killed} processes"
    return f"the out-of-memory killer ended {processes} (memory limit {memory_mb} MiB)"


def record_oom_kills(host: Host, counts: dict[str, int], now: datetime) -> int:
    """Record an `oom_kill` event on each capsule of `host` whose count in `counts` (capsule id ->
    kills since it was created, as the host reports them) grew; returns how many capsules got one.

    A count that went down (the host made the capsule again) is taken as the new baseline without
    an event. Ids of capsules on other hosts are ignored: a host reports only its own.
    """
    if not counts:
        return 0
    known = Sandbox.objects.filter(host=host, pk__in=list(counts)).values_list("pk", "oom_kills")
    changed = {pk: (last, counts[pk]) for pk, last in known if counts[pk] != last}
    recorded = 0
    for capsule in Sandbox.objects.filter(pk__in=list(changed)).only("pk", "memory_mb", "events"):
        last, reported = changed[capsule.pk]
        fields: dict[str, Any] = {"oom_kills": reported}
        if reported > last:
            message = oom_kill_message(reported - last, capsule.memory_mb)
            fields["events"] = with_event(capsule.events, new_event(OOM_KILL, message, now))
            log.warning("capsule %s on %s: %s", capsule.pk, host.address, message)
            recorded += 1
        # update(), not save(): an event is not a status change, and last_updated must keep
        # meaning "when the status settled" for the heartbeat's missing-capsule grace.
        Sandbox.objects.filter(pk=capsule.pk).update(**fields)
    return recorded
