"""Metrics of one capsule, the team's reservations (stats) and its daily usage: thin views over
capsules/reports.py, with the query parameters checked here and refused with 400 naming what is
allowed."""

import re
from datetime import date, timedelta
from typing import Any

from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from capsules import reports
from capsules.api.base import TeamAPIView
from capsules.api.schema import error_responses
from capsules.api.views import CAPSULE_ERRORS, TAGS, CapsuleAPIView

_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")


def range_param(request: Request, allowed: list[str], default: str) -> str:
    """The `range` query parameter, one of `allowed`; absent or empty means `default`."""
    value = request.query_params.get("range") or default
    if value not in allowed:
        raise ValidationError(f"range must be one of {', '.join(allowed)}; got {value[:40]!r}")
    return value


def date_param(request: Request, name: str, default: date) -> date:
    """A `YYYY-MM-DD` query parameter, a real date; absent or empty means `default`."""
    value = request.query_params.get(name) or ""
    if not value:
        return default
    if not _DATE_RE.fullmatch(value):
        raise ValidationError(f"{name} must be a date as YYYY-MM-DD; got {value[:40]!r}")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ValidationError(f"{name} is not a date: {value}") from None


# Response bodies (documentation and the OpenAPI contract)


class MetricPointSerializer(serializers.Serializer[Any]):
    timestamp_unix = serializers.IntegerField(help_text="When the last sample of the point was taken.")
    cpu_pct = serializers.FloatField(
        allow_null=True,
        help_text="CPU used, percent of the capsule's vCPUs (0-100); null when its host cannot measure it.",
    )
    mem_bytes = serializers.IntegerField(
        allow_null=True, help_text="Memory in use (its cgroup's); null when its host cannot measure it."
    )
    disk_bytes = serializers.IntegerField(
        allow_null=True, help_text="Host disk its sparse image takes; null when it has no disk image."
    )


class CapsuleMetricsSerializer(serializers.Serializer[Any]):
    sandbox_id = serializers.CharField()
    range = serializers.ChoiceField(choices=list(reports.METRIC_RANGES))
    points = MetricPointSerializer(many=True)


class CurrentSerializer(serializers.Serializer[Any]):
    running_count = serializers.IntegerField()
    vcpus_reserved = serializers.IntegerField(
        help_text="vCPUs the team's capsules hold, paused ones included."
    )
    memory_mb_reserved = serializers.IntegerField()


class PeaksSerializer(serializers.Serializer[Any]):
    running_count = serializers.IntegerField()
    vcpus = serializers.IntegerField()
    memory_mb = serializers.IntegerField()


class SeriesSerializer(serializers.Serializer[Any]):
    labels = serializers.ListField(child=serializers.DateTimeField(), help_text="Start of each slice.")
    running = serializers.ListField(child=serializers.IntegerField())
    vcpus = serializers.ListField(child=serializers.IntegerField())
    memory_mb = serializers.ListField(child=serializers.IntegerField())


class CapsuleStatsSerializer(serializers.Serializer[Any]):
    range = serializers.ChoiceField(choices=list(reports.STATS_RANGES))
    current = CurrentSerializer()
    peaks = PeaksSerializer(help_text="The most the team's capsules held in the last 30 days.")
    series = SeriesSerializer(help_text="Parallel arrays, the largest value in each slice of the range.")


class UsagePointSerializer(serializers.Serializer[Any]):
    date = serializers.DateField()
    cpu_minutes = serializers.FloatField(help_text="CPU time the team's capsules used, in minutes.")
    ram_mb_minutes = serializers.FloatField(help_text="Memory in use, in MiB, times the minutes it was held.")


# `from` is a Python keyword, so this body is built the way a class statement would build it.
UsageSerializer: type[serializers.Serializer[Any]] = type(
    "UsageSerializer",
    (serializers.Serializer,),
    {
        "from": serializers.DateField(help_text="First day (UTC), included."),
        "to": serializers.DateField(help_text="Last day (UTC), included."),
        "points": UsagePointSerializer(many=True, help_text="Every day of the span, 0 without samples."),
        "__module__": __name__,
    },
)


def _range_parameter(allowed: list[str], default: str) -> OpenApiParameter:
    return OpenApiParameter(
        "range", OpenApiTypes.STR, OpenApiParameter.QUERY, enum=allowed, default=default, required=False
    )


# Views


class CapsuleMetricsView(CapsuleAPIView):
    """CPU, memory and disk of one capsule over a range, from the samples taken at each heartbeat
    of its host; a destroyed capsule answers what is still kept of it."""

    @extend_schema(
        tags=TAGS,
        summary="Metrics of a capsule over a range (at most 120 points, each averaging its slice)",
        parameters=[_range_parameter(list(reports.METRIC_RANGES), reports.DEFAULT_METRIC_RANGE)],
        responses={200: CapsuleMetricsSerializer, **CAPSULE_ERRORS, **error_responses(400)},
    )
    def get(self, request: Request, capsule_id: str) -> Response:
        range_name = range_param(request, list(reports.METRIC_RANGES), reports.DEFAULT_METRIC_RANGE)
        capsule = self.get_object()
        points = reports.capsule_points(capsule, range_name, timezone.now())
        return Response({"sandbox_id": capsule.pk, "range": range_name, "points": points})


class CapsuleStatsView(TeamAPIView):
    """What the team's capsules hold now, their 30-day peaks and a series over the range."""

    @extend_schema(
        tags=TAGS,
        summary="The team's running capsules and reserved vCPUs and memory: now, peaks, and a series",
        parameters=[_range_parameter(list(reports.STATS_RANGES), reports.DEFAULT_STATS_RANGE)],
        responses={200: CapsuleStatsSerializer, **error_responses(400, 401, 500)},
    )
    def get(self, request: Request) -> Response:
        range_name = range_param(request, list(reports.STATS_RANGES), reports.DEFAULT_STATS_RANGE)
        return Response(reports.team_stats(self.team, range_name, timezone.now()))


class CapsuleUsageView(TeamAPIView):
    """CPU minutes and memory MB-minutes the team's capsules used, per UTC day."""

    @extend_schema(
        tags=TAGS,
        summary=f"Daily CPU and memory use of the team's capsules (at most {reports.MAX_USAGE_DAYS} days)",
        parameters=[
            OpenApiParameter("from", OpenApiTypes.DATE, OpenApiParameter.QUERY, required=False),
            OpenApiParameter("to", OpenApiTypes.DATE, OpenApiParameter.QUERY, required=False),
        ],
        responses={200: UsageSerializer, **error_responses(400, 401, 500)},
    )
    def get(self, request: Request) -> Response:
        today = timezone.now().date()
        last = date_param(request, "to", today)
        first = date_param(request, "from", last - timedelta(days=reports.DEFAULT_USAGE_DAYS - 1))
        if first > last:
            raise ValidationError(f"from ({first}) must not be after to ({last})")
        if (last - first).days + 1 > reports.MAX_USAGE_DAYS:
            raise ValidationError(f"from and to may span at most {reports.MAX_USAGE_DAYS} days")
        points = reports.team_usage(self.team, first, last)
        return Response({"from": first.isoformat(), "to": last.isoformat(), "points": points})
