"""Capsule metrics, team stats and daily usage through the API: what each answers from the kept
samples, each refusal (unknown range, bad dates, missing or another team's capsule, no
credentials), and the routing that keeps `stats` and `usage` from being taken for capsule ids."""

from datetime import date, timedelta

import pytest
from django.urls import resolve
from django.utils import timezone

from capsules.api.metrics_views import CapsuleStatsView, CapsuleUsageView
from capsules.api.views import CapsuleDetailView
from capsules.ids import new_sandbox_id
from capsules.models import CapsuleSample, DailyUsage, Host, Sandbox, Team, TeamSample
from tests.api import error
from tests.api.contract import ContractClient

Status = Sandbox.Status
MIB = 1024 * 1024
METRIC_RANGES = "5m, 10m, 1h, 2h, 6h, 12h, 24h"
STATS_RANGES = "5m, 1h, 6h, 24h, 30d"


@pytest.fixture
def quiet_host(db: None) -> Host:
    """A host row only: these endpoints read what heartbeats left, and never call an agent."""
    return Host.objects.create(address="10.0.0.9:50071")


@pytest.fixture
def sampled_capsule(team: Team, quiet_host: Host) -> Sandbox:
    return Sandbox.objects.create(team=team, host=quiet_host, status=Status.RUNNING, vcpus=2, memory_mb=1024)


@pytest.fixture
def their_capsule(other_team: Team, quiet_host: Host) -> Sandbox:
    return Sandbox.objects.create(team=other_team, host=quiet_host, status=Status.RUNNING)


def metrics_url(capsule_id: str, range_name: str | None = None) -> str:
    query = f"?range={range_name}" if range_name is not None else ""
    return f"/v1/capsules/{capsule_id}/metrics{query}"


# Metrics


def test_metrics_answer_the_samples_of_the_default_range(
    team_client: ContractClient, sampled_capsule: Sandbox
) -> None:
    now = timezone.now()
    for age, cpu, mem, disk in ((30, 50.0, 100 * MIB, 10 * MIB), (20, None, None, None), (900, 1.0, 1, 1)):
        CapsuleSample.objects.create(
            sandbox=sampled_capsule,
            at=now - timedelta(seconds=age),
            cpu_pct=cpu,
            mem_bytes=mem,
            disk_bytes=disk,
        )
    response = team_client.get(metrics_url(sampled_capsule.pk))
    assert response.status_code == 200
    body = response.json()
    assert (body["sandbox_id"], body["range"]) == (sampled_capsule.pk, "10m")
    # Ten minutes hold the two recent samples (the 15-minute-old one is outside), each its own
    # point; a reading the host could not take stays null.
    assert [(p["cpu_pct"], p["mem_bytes"], p["disk_bytes"]) for p in body["points"]] == [
        (50.0, 100 * MIB, 10 * MIB),
        (None, None, None),
    ]
    assert [p["timestamp_unix"] for p in body["points"]] == [
        int((now - timedelta(seconds=age)).timestamp()) for age in (30, 20)
    ]


def test_a_long_range_averages_each_slice(key_client: ContractClient, sampled_capsule: Sandbox) -> None:
    # 24h in 120 slices of 12 minutes; two samples a minute apart share one.
    base = timezone.now().replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    for offset, cpu, mem in ((0, 10.0, 100), (60, 30.0, 300)):
        at = base + timedelta(seconds=offset)
        CapsuleSample.objects.create(
            sandbox=sampled_capsule, at=at, cpu_pct=cpu, mem_bytes=mem, disk_bytes=None
        )
    [point] = key_client.get(metrics_url(sampled_capsule.pk, "24h")).json()["points"]
    assert (point["cpu_pct"], point["mem_bytes"], point["disk_bytes"]) == (20.0, 200, None)
    assert point["timestamp_unix"] == int((base + timedelta(seconds=60)).timestamp())


def test_a_capsule_without_samples_answers_no_points(
    key_client: ContractClient, sampled_capsule: Sandbox
) -> None:
    response = key_client.get(metrics_url(sampled_capsule.pk, "1h"))
    assert response.json() == {"sandbox_id": sampled_capsule.pk, "range": "1h", "points": []}


@pytest.mark.parametrize("bad", ["7m", "1d", "10M", " 10m"])
def test_an_unknown_metrics_range_is_refused_naming_the_ranges(
    key_client: ContractClient, sampled_capsule: Sandbox, bad: str
) -> None:
    response = key_client.get(metrics_url(sampled_capsule.pk), {"range": bad})
    assert response.status_code == 400
    assert response.json() == error("invalid_request", f"range must be one of {METRIC_RANGES}; got {bad!r}")


def test_metrics_of_a_missing_capsule_are_not_found(key_client: ContractClient, db: None) -> None:
    missing = new_sandbox_id()
    response = key_client.get(metrics_url(missing))
    assert (response.status_code, response.json()) == (
        404,
        error("not_found", f"capsule {missing} not found"),
    )


def test_metrics_of_another_teams_capsule_answer_like_a_missing_one(
    key_client: ContractClient, their_capsule: Sandbox
) -> None:
    CapsuleSample.objects.create(sandbox=their_capsule, at=timezone.now(), cpu_pct=1.0)
    response = key_client.get(metrics_url(their_capsule.pk))
    assert (response.status_code, response.json()) == (
        404,
        error("not_found", f"capsule {their_capsule.pk} not found"),
    )


@pytest.mark.parametrize(
    "path", ["/v1/capsules/cl-00000000000000000000/metrics", "/v1/capsules/stats", "/v1/capsules/usage"]
)
def test_every_metrics_endpoint_needs_credentials(client: ContractClient, db: None, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"


# Stats


def test_stats_answer_now_the_30_day_peaks_and_a_series(
    team_client: ContractClient, team: Team, other_team: Team, quiet_host: Host
) -> None:
    now = timezone.now()
    Sandbox.objects.create(team=team, host=quiet_host, status=Status.RUNNING, vcpus=2, memory_mb=1024)
    Sandbox.objects.create(team=team, host=quiet_host, status=Status.PAUSED, vcpus=1, memory_mb=512)
    Sandbox.objects.create(team=team, host=quiet_host, status=Status.STOPPED, vcpus=8, memory_mb=8192)
    TeamSample.objects.create(team=team, at=now - timedelta(days=3), running=5, vcpus=6, memory_mb=4096)
    TeamSample.objects.create(team=team, at=now - timedelta(days=40), running=9, vcpus=9, memory_mb=9999)
    TeamSample.objects.create(team=team, at=now - timedelta(seconds=30), running=2, vcpus=4, memory_mb=2048)
    TeamSample.objects.create(
        team=other_team, at=now - timedelta(seconds=30), running=7, vcpus=7, memory_mb=7
    )
    response = team_client.get("/v1/capsules/stats")
    assert response.status_code == 200
    body = response.json()
    assert body["range"] == "1h"
    assert body["current"] == {"running_count": 1, "vcpus_reserved": 3, "memory_mb_reserved": 1536}
    assert body["peaks"] == {"running_count": 5, "vcpus": 6, "memory_mb": 4096}
    series = body["series"]
    # An hour in one-minute slices; the recent sample in one of the last two, the rest empty.
    assert (
        len(series["labels"])
        == len(series["running"])
        == len(series["vcpus"])
        == len(series["memory_mb"])
        == 60
    )
    assert sum(series["running"]) == 2
    assert 2 in series["running"][-2:]
    assert (sum(series["vcpus"]), sum(series["memory_mb"])) == (4, 2048)


def test_stats_of_a_team_with_nothing_are_zeros(key_client: ContractClient, team: Team) -> None:
    body = key_client.get("/v1/capsules/stats", {"range": "30d"}).json()
    assert body["current"] == {"running_count": 0, "vcpus_reserved": 0, "memory_mb_reserved": 0}
    assert body["peaks"] == {"running_count": 0, "vcpus": 0, "memory_mb": 0}
    assert set(body["series"]["running"]) == {0}


def test_an_unknown_stats_range_is_refused_naming_the_ranges(key_client: ContractClient, team: Team) -> None:
    response = key_client.get("/v1/capsules/stats", {"range": "10m"})
    assert response.status_code == 400
    assert response.json() == error("invalid_request", f"range must be one of {STATS_RANGES}; got '10m'")


# Usage


def test_usage_answers_every_day_of_the_span(
    team_client: ContractClient, team: Team, other_team: Team
) -> None:
    DailyUsage.objects.create(team=team, day=date(2026, 3, 2), cpu_minutes=1.5, ram_mb_minutes=600.25)
    DailyUsage.objects.create(team=other_team, day=date(2026, 3, 1), cpu_minutes=99, ram_mb_minutes=99)
    response = team_client.get("/v1/capsules/usage", {"from": "2026-03-01", "to": "2026-03-03"})
    assert response.status_code == 200
    assert response.json() == {
        "from": "2026-03-01",
        "to": "2026-03-03",
        "points": [
            {"date": "2026-03-01", "cpu_minutes": 0.0, "ram_mb_minutes": 0.0},
            {"date": "2026-03-02", "cpu_minutes": 1.5, "ram_mb_minutes": 600.25},
            {"date": "2026-03-03", "cpu_minutes": 0.0, "ram_mb_minutes": 0.0},
        ],
    }


def test_usage_defaults_to_the_last_30_days(key_client: ContractClient, team: Team) -> None:
    today = timezone.now().date()
    body = key_client.get("/v1/capsules/usage").json()
    assert (body["from"], body["to"]) == ((today - timedelta(days=29)).isoformat(), today.isoformat())
    assert len(body["points"]) == 30


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"from": "2026/03/01"}, "from must be a date as YYYY-MM-DD; got '2026/03/01'"),
        ({"to": "20260301"}, "to must be a date as YYYY-MM-DD; got '20260301'"),
        ({"from": "2026-02-30"}, "from is not a date: 2026-02-30"),
        ({"from": "2026-03-05", "to": "2026-03-01"}, "from (2026-03-05) must not be after to (2026-03-01)"),
        ({"from": "2026-01-01", "to": "2026-04-03"}, "from and to may span at most 92 days"),
    ],
    ids=["bad format", "basic format", "no such day", "from after to", "too long"],
)
def test_bad_usage_dates_are_refused(
    key_client: ContractClient, team: Team, query: dict[str, str], message: str
) -> None:
    response = key_client.get("/v1/capsules/usage", query)
    assert (response.status_code, response.json()) == (400, error("invalid_request", message))


def test_a_span_of_exactly_92_days_is_answered(key_client: ContractClient, team: Team) -> None:
    response = key_client.get("/v1/capsules/usage", {"from": "2026-01-01", "to": "2026-04-02"})
    assert (response.status_code, len(response.json()["points"])) == (200, 92)


# Routing


@pytest.mark.parametrize("prefix", ["/v1", "/api/v1"])
def test_stats_and_usage_are_never_taken_for_capsule_ids(prefix: str) -> None:
    assert resolve(f"{prefix}/capsules/stats").func.view_class is CapsuleStatsView  # type: ignore[attr-defined]
    assert resolve(f"{prefix}/capsules/usage").func.view_class is CapsuleUsageView  # type: ignore[attr-defined]
    # Every id a capsule can get starts with "cl-", so it reaches the capsule, never those two.
    for _ in range(200):
        capsule_id = new_sandbox_id()
        assert capsule_id.startswith("cl-")
        match = resolve(f"{prefix}/capsules/{capsule_id}")
        assert (match.func.view_class, match.kwargs) == (CapsuleDetailView, {"capsule_id": capsule_id})  # type: ignore[attr-defined]


def test_stats_answers_the_stats_not_a_capsule_lookup(key_client: ContractClient, team: Team) -> None:
    for path in ("/v1/capsules/stats", "/api/v1/capsules/stats", "/v1/capsules/usage"):
        response = key_client.get(path)
        assert response.status_code == 200, path
        assert "error" not in response.json()
