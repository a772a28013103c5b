"""Retention: recordings older than their team's retention period go, files and rows.

Run by the monitor once per housekeeping interval (capsules/management/commands/monitor.py) and
by `manage.py purge_recordings`.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from capsules.models import Team
from recordings import store
from recordings.models import Recording

log = logging.getLogger(__name__)


def expired(now: datetime) -> Q:
    """Recordings past their team's retention (WRENN_RECORDING_RETENTION_DAYS unless the team set
    its own)."""
    default = int(settings.WRENN_RECORDING_RETENTION_DAYS)
    by_team: dict[int, list[object]] = {}
    for team_id, days in Team.objects.values_list("pk", "recording_retention_days"):
        by_team.setdefault(days if days is not None else default, []).append(team_id)
    condition = Q(pk__in=[])
    for days, teams in by_team.items():
        condition |= Q(team_id__in=teams, started_at__lt=now - timedelta(days=days))
    return condition


def purge_expired(now: datetime | None = None) -> int:
    """Deletes the recordings past retention, files first; how many went."""
    now = now or timezone.now()
    count = 0
    for recording in Recording.objects.filter(expired(now)).iterator():
        store.delete_files(recording)
        recording.delete()
        count += 1
    if count:
        log.info("deleted %d recording(s) past their team's retention", count)
    return count
