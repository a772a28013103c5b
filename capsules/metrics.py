"""Samples of what capsules use, taken at each heartbeat of their host, and what is kept of them.

A heartbeat reports each capsule's cumulative CPU time, memory in use and disk allocated
(hostagent/usage.py). Each becomes a `CapsuleSample`: CPU as the share of the capsule's vCPUs used
since its previous sample (0-100), computed from the two cumulative readings; memory and disk as
reported. Its CPU seconds and memory-minutes are added to the team's `DailyUsage` of that UTC day
at once, so that usage needs no samples older than the metrics' longest range. Once per heartbeat
interval the monitor (`manage.py monitor`) takes a `TeamSample` of every team's reservations (the
stats series and peaks) and prunes what is past its retention, off the heartbeats' path.

A reading the host does not give (a runtime without a cgroup per capsule) stays null all the way
to the API, which then says "not measured" instead of showing a zero.
"""

import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from django.conf import settings
from django.db.models import Case, Count, F, FloatField, OuterRef, Q, Subquery, Sum, Value, When
from django.db.models.functions import Coalesce

from capsules.models import CapsuleSample, DailyUsage, Host, Sandbox, Team, TeamSample
from capsules.states import OCCUPYING

log = logging.getLogger(__name__)

MIB = 1024 * 1024
# A gap longer than this many heartbeat intervals (the host was away) is not filled with the
# memory of the sample after it: what the capsule held meanwhile is unknown.
MAX_GAP_INTERVALS = 3


@dataclass(frozen=True)
class Reading:
    """One capsule's readings in a heartbeat; None where the host did not report one."""

    sandbox_id: str
    cpu_usec: int | None
    mem_bytes: int | None
    disk_bytes: int | None


def interval() -> timedelta:
    """How often samples are taken: the heartbeat interval the control plane asks hosts for."""
    return timedelta(seconds=float(settings.WRENN_HOST_HEARTBEAT_INTERVAL_SEC))


def metrics_retention() -> timedelta:
    return timedelta(hours=float(settings.WRENN_METRICS_RETENTION_HOURS))


def usage_retention() -> timedelta:
    return timedelta(days=int(settings.WRENN_USAGE_RETENTION_DAYS))


def cpu_share(
    previous_usec: int | None, current_usec: int | None, elapsed: timedelta, vcpus: int
) -> tuple[float | None, float | None]:
    """(CPU seconds used, percent of `vcpus` cores, 0-100) between two cumulative readings taken
    `elapsed` apart; (None, None) when either is missing, the counter went back (the host made the
    capsule again) or no time passed."""
    if previous_usec is None or current_usec is None or current_usec < previous_usec:
        return None, None
    seconds = elapsed.total_seconds()
    if seconds <= 0:
        return None, None
    used = (current_usec - previous_usec) / 1_000_000
    percent = used / seconds / max(vcpus, 1) * 100
    return used, min(max(percent, 0.0), 100.0)


def record_samples(host: Host, readings: Iterable[Reading], now: datetime) -> int:
    """Sample the capsules of `host` that hold resources and were reported; returns how many. A
    capsule reported without readings (its runtime has no cgroup per capsule, or its agent is
    older) gets samples of nulls, so that its metrics say "not measured" rather than nothing. A
    capsule sampled less than half an interval ago (an early retry of the heartbeat) is skipped,
    so that samples follow the heartbeat interval."""
    reported = {reading.sandbox_id: reading for reading in readings}
    if not reported:
        return 0
    latest = CapsuleSample.objects.filter(sandbox=OuterRef("pk")).order_by("-at")
    capsules = (
        Sandbox.objects.filter(host=host, pk__in=list(reported), status__in=OCCUPYING)
        .annotate(
            previous_at=Subquery(latest.values("at")[:1]),
            previous_cpu=Subquery(latest.values("cpu_usec")[:1]),
        )
        .values_list("pk", "team_id", "vcpus", "previous_at", "previous_cpu")
    )
    every = interval()
    samples: list[CapsuleSample] = []
    cpu_seconds: defaultdict[UUID, float] = defaultdict(float)
    mb_minutes: defaultdict[UUID, float] = defaultdict(float)
    for pk, team_id, vcpus, previous_at, previous_cpu in capsules:
        if previous_at is not None and now - previous_at < every / 2:
            continue
        reading = reported[pk]
        elapsed = now - previous_at if previous_at is not None else timedelta(0)
        used, percent = cpu_share(previous_cpu, reading.cpu_usec, elapsed, vcpus)
        samples.append(
            CapsuleSample(
                sandbox_id=pk,
                at=now,
                cpu_usec=reading.cpu_usec,
                cpu_seconds=used,
                cpu_pct=percent,
                mem_bytes=reading.mem_bytes,
                disk_bytes=reading.disk_bytes,
            )
        )
        if used is not None:
            cpu_seconds[team_id] += used
        if reading.mem_bytes is not None and elapsed <= every * MAX_GAP_INTERVALS:
            mb_minutes[team_id] += reading.mem_bytes / MIB * elapsed.total_seconds() / 60
    CapsuleSample.objects.bulk_create(samples)
    _add_usage(now, {team: cpu_seconds[team] / 60 for team in cpu_seconds}, mb_minutes)
    return len(samples)


def _add_usage(now: datetime, cpu_minutes: dict[UUID, float], ram_mb_minutes: dict[UUID, float]) -> None:
    """Add to each team's usage of today (UTC), in two queries however many teams: make the rows
    that are missing, then one UPDATE adding to the sums, so that two hosts reporting at once
    both count."""
    teams = sorted(cpu_minutes.keys() | ram_mb_minutes.keys())
    if not teams:
        return
    day = now.date()
    DailyUsage.objects.bulk_create(
        [DailyUsage(team_id=team, day=day) for team in teams], ignore_conflicts=True
    )

    def per_team(amounts: dict[UUID, float]) -> Case:
        whens = [When(team_id=team, then=Value(amounts.get(team, 0.0))) for team in teams]
        return Case(*whens, default=Value(0.0), output_field=FloatField())

    DailyUsage.objects.filter(day=day, team_id__in=teams).update(
        cpu_minutes=F("cpu_minutes") + per_team(cpu_minutes),
        ram_mb_minutes=F("ram_mb_minutes") + per_team(ram_mb_minutes),
    )


def reserved_by_team() -> dict[UUID, tuple[int, int, int]]:
    """team id -> (running capsules, vCPUs, memory MB) that the team's capsules hold now, for the
    teams that hold any (the statuses quotas count, capsules/quotas.py)."""
    rows = (
        Sandbox.objects.filter(status__in=OCCUPYING)
        .values("team_id")
        .annotate(
            running=Count("pk", filter=Q(status=Sandbox.Status.RUNNING)),
            vcpus=Coalesce(Sum("vcpus"), 0),
            memory_mb=Coalesce(Sum("memory_mb"), 0),
        )
    )
    return {row["team_id"]: (row["running"], row["vcpus"], row["memory_mb"]) for row in rows}


def reserved_by(team: Team) -> tuple[int, int, int]:
    """(running capsules, vCPUs, memory MB) that `team`'s capsules hold now."""
    totals = Sandbox.objects.filter(team=team, status__in=OCCUPYING).aggregate(
        running=Count("pk", filter=Q(status=Sandbox.Status.RUNNING)),
        vcpus=Coalesce(Sum("vcpus"), 0),
        memory_mb=Coalesce(Sum("memory_mb"), 0),
    )
    return totals["running"], totals["vcpus"], totals["memory_mb"]


def housekeeping(now: datetime) -> bool:
    """Once per interval (each pass of every monitor calls this; the first one in each interval
    does the work): a TeamSample of each team that holds capsules, then pruning. Returns whether
    this call did it. Two monitors racing may both take samples: the series take the largest
    value of each slice, so a duplicate changes nothing."""
    if TeamSample.objects.filter(at__gt=now - interval() * 0.9).exists():
        return False
    take_team_samples(now)
    prune(now)
    return True


def take_team_samples(now: datetime) -> int:
    """A TeamSample for each team that holds capsules; how many."""
    samples = [
        TeamSample(team_id=team_id, at=now, running=running, vcpus=vcpus, memory_mb=memory_mb)
        for team_id, (running, vcpus, memory_mb) in reserved_by_team().items()
    ]
    TeamSample.objects.bulk_create(samples)
    return len(samples)


def prune(now: datetime) -> int:
    """Delete what is past its retention; returns how many rows went."""
    removed, _ = CapsuleSample.objects.filter(at__lt=now - metrics_retention()).delete()
    teams, _ = TeamSample.objects.filter(at__lt=now - usage_retention()).delete()
    days, _ = DailyUsage.objects.filter(day__lt=(now - usage_retention()).date()).delete()
    total = removed + teams + days
    if total:
        log.info("pruned %d capsule samples, %d team samples and %d days of usage", removed, teams, days)
    return total
