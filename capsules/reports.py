"""What the metrics, stats and usage endpoints answer, read from what capsules/metrics.py keeps.

Ranges are names the API accepts (METRIC_RANGES, STATS_RANGES); a range is cut into slices and
each slice answers one point, so that a long range answers as few points as a short one.
"""

import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from django.db.models import Max

from capsules import metrics
from capsules.models import CapsuleSample, DailyUsage, Sandbox, Team, TeamSample

METRIC_RANGES: dict[str, timedelta] = {
    "5m": timedelta(minutes=5),
    "10m": timedelta(minutes=10),
    "1h": timedelta(hours=1),
    "2h": timedelta(hours=2),
    "6h": timedelta(hours=6),
    "12h": timedelta(hours=12),
    "24h": timedelta(hours=24),
}
DEFAULT_METRIC_RANGE = "10m"
# At most this many points per capsule: a slice averages the samples in it.
MAX_METRIC_POINTS = 120

# Each stats range and the length of its slices; a slice is never shorter than two sampling
# intervals, so that each holds a team sample however the heartbeats fall.
STATS_RANGES: dict[str, tuple[timedelta, timedelta]] = {
    "5m": (timedelta(minutes=5), timedelta(seconds=10)),
    "1h": (timedelta(hours=1), timedelta(minutes=1)),
    "6h": (timedelta(hours=6), timedelta(minutes=5)),
    "24h": (timedelta(hours=24), timedelta(minutes=15)),
    "30d": (timedelta(days=30), timedelta(hours=6)),
}
DEFAULT_STATS_RANGE = "1h"
PEAKS_OVER = timedelta(days=30)

# Usage: the span one request may ask for, and the default (the last 30 days, today included).
MAX_USAGE_DAYS = 92
DEFAULT_USAGE_DAYS = 30


def _mean(values: list[Any]) -> float | None:
    known = [value for value in values if value is not None]
    return sum(known) / len(known) if known else None


def _whole(value: float | None) -> int | None:
    return None if value is None else round(value)


def capsule_points(capsule: Sandbox, range_name: str, now: datetime) -> list[dict[str, Any]]:
    """The capsule's samples within the range, oldest first, averaged per slice; a reading the
    host could not take stays null."""
    span = METRIC_RANGES[range_name]
    step = span.total_seconds() / MAX_METRIC_POINTS
    rows = (
        CapsuleSample.objects.filter(sandbox=capsule, at__gte=now - span)
        .order_by("at")
        .values_list("at", "cpu_pct", "mem_bytes", "disk_bytes")
    )
    slices: dict[int, list[tuple[datetime, float | None, int | None, int | None]]] = defaultdict(list)
    for row in rows:
        slices[math.floor(row[0].timestamp() / step)].append(row)
    points = []
    for _slice, samples in sorted(slices.items()):
        cpu = _mean([s[1] for s in samples])
        points.append(
            {
                "timestamp_unix": int(samples[-1][0].timestamp()),
                "cpu_pct": None if cpu is None else round(cpu, 2),
                "mem_bytes": _whole(_mean([s[2] for s in samples])),
                "disk_bytes": _whole(_mean([s[3] for s in samples])),
            }
        )
    return points


@dataclass(frozen=True)
class Series:
    labels: list[datetime]
    running: list[int]
    vcpus: list[int]
    memory_mb: list[int]


def _series(team: Team, range_name: str, now: datetime) -> Series:
    span, nominal = STATS_RANGES[range_name]
    step = max(nominal, 2 * metrics.interval()).total_seconds()
    count = max(1, math.ceil(span.total_seconds() / step))
    # Slices aligned on multiples of their length; the last one holds now.
    first = (math.floor(now.timestamp() / step) - count + 1) * step
    running, vcpus, memory_mb = [0] * count, [0] * count, [0] * count
    start = datetime.fromtimestamp(first, tz=UTC)
    rows = TeamSample.objects.filter(team=team, at__gte=start, at__lte=now).values_list(
        "at", "running", "vcpus", "memory_mb"
    )
    for at, run, cpus, memory in rows:
        index = min(int((at.timestamp() - first) // step), count - 1)
        running[index] = max(running[index], run)
        vcpus[index] = max(vcpus[index], cpus)
        memory_mb[index] = max(memory_mb[index], memory)
    labels = [datetime.fromtimestamp(first + i * step, tz=UTC) for i in range(count)]
    return Series(labels, running, vcpus, memory_mb)


def team_stats(team: Team, range_name: str, now: datetime) -> dict[str, Any]:
    """What the team's capsules hold now, the most they held in 30 days, and a series over the
    range (the largest value in each slice)."""
    running, vcpus, memory_mb = metrics.reserved_by(team)
    peaks = TeamSample.objects.filter(team=team, at__gte=now - PEAKS_OVER).aggregate(
        running=Max("running"), vcpus=Max("vcpus"), memory_mb=Max("memory_mb")
    )
    series = _series(team, range_name, now)
    return {
        "range": range_name,
        "current": {"running_count": running, "vcpus_reserved": vcpus, "memory_mb_reserved": memory_mb},
        # Now counts too: the latest sample may be up to an interval old.
        "peaks": {
            "running_count": max(peaks["running"] or 0, running),
            "vcpus": max(peaks["vcpus"] or 0, vcpus),
            "memory_mb": max(peaks["memory_mb"] or 0, memory_mb),
        },
        "series": {
            "labels": [label.isoformat() for label in series.labels],
            "running": series.running,
            "vcpus": series.vcpus,
            "memory_mb": series.memory_mb,
        },
    }


def team_usage(team: Team, first: date, last: date) -> list[dict[str, Any]]:
    """Each day from `first` to `last` (UTC, both included): CPU minutes used and memory in use
    in MB-minutes, 0 for a day without samples."""
    kept = {row.day: row for row in DailyUsage.objects.filter(team=team, day__gte=first, day__lte=last)}
    points = []
    for offset in range((last - first).days + 1):
        day = first + timedelta(days=offset)
        row = kept.get(day)
        points.append(
            {
                "date": day.isoformat(),
                "cpu_minutes": round(row.cpu_minutes, 4) if row else 0.0,
                "ram_mb_minutes": round(row.ram_mb_minutes, 4) if row else 0.0,
            }
        )
    return points
