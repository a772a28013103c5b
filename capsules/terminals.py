"""The control plane's rows of terminal sessions kept true to the host agents that hold them.

A row opens when a terminal starts (actions.record_terminal_started) and closes when a connected
consumer sees its exit, but a session can end with nobody connected, an agent can restart, and a
capsule can be destroyed: rows would stay open forever. Each heartbeat lists every capsule's live
PTY tags, and `reconcile_sessions` makes the host's rows say the same; the monitor closes what
is left open on destroyed capsules. `live_sessions` counts the open rows of a capsule.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from capsules.models import Host, Sandbox, TerminalSession

log = logging.getLogger(__name__)

# A heartbeat lists the sessions its agent had when it was written; a row made just after that
# (a terminal that started meanwhile) may not be in it yet. Heartbeats time out after 5 s.
SESSION_GRACE = timedelta(seconds=5)


def live_sessions(capsule: Sandbox | str) -> int:
    """How many terminal sessions of the capsule (a row or its id) are open."""
    capsule_id = capsule if isinstance(capsule, str) else capsule.pk
    return TerminalSession.objects.filter(sandbox_id=capsule_id, ended_at__isnull=True).count()


def reserve_session(sandbox_id: str, tag: str, limit: int) -> int | None:
    """Opens the row of a terminal about to start, unless the capsule already has ``limit`` open
    ones; None when it was opened, else how many are open. The capsule's row is locked while it
    counts, so concurrent starts cannot all slip under the limit (on PostgreSQL; SQLite runs one
    writer at a time anyway)."""
    with transaction.atomic():
        if not Sandbox.objects.select_for_update().filter(pk=sandbox_id).exists():
            return None  # gone: the start fails on its own
        open_now = live_sessions(sandbox_id)
        if open_now >= limit:
            return open_now
        TerminalSession.objects.update_or_create(
            sandbox_id=sandbox_id, tag=tag, defaults={"ended_at": None, "exit_code": None}
        )
    return None


def close_sessions(sessions: Q, now: datetime | None = None) -> int:
    """Mark the open sessions matching `sessions` ended (with no exit code: nobody saw it); how many."""
    rows = TerminalSession.objects.filter(sessions, ended_at__isnull=True)
    return rows.update(ended_at=now or timezone.now(), viewers=0)


def reconcile_sessions(host: Host, live: dict[str, frozenset[str] | None], now: datetime) -> None:
    """Make the rows of `host`'s capsules agree with what its agent reports.

    `live` maps each capsule the agent has to the tags of its live sessions, or to None where it
    did not say (an older agent's capsule with sessions): those rows are left alone. Rows of
    capsules not in `live` and of tags not listed close (once past SESSION_GRACE); rows the agent
    lists as live open again (closed here by mistake), and a live tag without a row gets one.
    """
    tags = {tag for listed in live.values() if listed for tag in listed}
    rows = TerminalSession.objects.filter(sandbox__host=host).filter(
        Q(ended_at__isnull=True) | Q(tag__in=tags)
    )
    close, reopen, known = [], [], set()
    for pk, sandbox_id, tag, ended_at, exit_code, started_at in rows.values_list(
        "pk", "sandbox_id", "tag", "ended_at", "exit_code", "started_at"
    ):
        listed = live.get(sandbox_id, frozenset())
        is_live = listed is None or tag in listed
        known.add((sandbox_id, tag))
        if ended_at is None and not is_live and started_at < now - SESSION_GRACE:
            close.append(pk)
        elif ended_at is not None and exit_code is None and listed is not None and tag in listed:
            reopen.append(pk)
    closed = close_sessions(Q(pk__in=close), now) if close else 0
    reopened = TerminalSession.objects.filter(pk__in=reopen).update(ended_at=None) if reopen else 0
    unknown = {(sandbox_id, tag) for sandbox_id, listed in live.items() if listed for tag in listed} - known
    created = _create_rows(host, unknown) if unknown else 0
    if closed or reopened or created:
        log.info(
            "host %s: %d terminal session(s) closed, %d reopened, %d found, as its agent reports",
            host.address,
            closed,
            reopened,
            created,
        )


def _create_rows(host: Host, sessions: set[tuple[str, str]]) -> int:
    """Rows for live sessions the control plane has none of (its record of their start was lost)."""
    ours = set(
        Sandbox.objects.filter(host=host, pk__in={s for s, _ in sessions}).values_list("pk", flat=True)
    )
    rows = [TerminalSession(sandbox_id=s, tag=t) for s, t in sorted(sessions) if s in ours]
    # A consumer may record the start at the same moment; its row, with the details, wins.
    TerminalSession.objects.bulk_create(rows, ignore_conflicts=True)
    return len(rows)


def close_sessions_of_stopped_capsules(now: datetime | None = None) -> int:
    """Close the rows a destroyed capsule still has open: destroy closes them, but a consumer's
    record of a start or a viewer under way at that moment can land after it."""
    return close_sessions(Q(sandbox__status=Sandbox.Status.STOPPED), now)
