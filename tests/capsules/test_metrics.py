"""Samples from heartbeats: CPU share from two successive readings normalised to the capsule's
vCPUs, memory and disk as reported, daily usage added as samples arrive, team reservations once
per interval, and everything pruned past its retention."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.utils import timezone

from capsules import metrics
from capsules.hosts import record_heartbeat
from capsules.models import CapsuleSample, DailyUsage, Host, Sandbox, Team, TeamSample

Status = Sandbox.Status
MIB = 1024 * 1024
INTERVAL = 10.0


@pytest.fixture(autouse=True)
def _interval(settings: Any) -> None:
    settings.WRENN_HOST_HEARTBEAT_INTERVAL_SEC = INTERVAL


@pytest.fixture
def reporting_host(db: None) -> Host:
    return Host.objects.create(address="10.0.0.7:50071", last_heartbeat_at=timezone.now())


@pytest.fixture
def two_vcpu_capsule(team: Team, reporting_host: Host) -> Sandbox:
    return Sandbox.objects.create(
        team=team, host=reporting_host, status=Status.RUNNING, vcpus=2, memory_mb=1024
    )


def sample(
    host: Host, capsule: Sandbox, at: datetime, cpu_usec: Any = None, mem: Any = None, disk: Any = None
) -> int:
    return metrics.record_samples(host, [metrics.Reading(capsule.pk, cpu_usec, mem, disk)], at)


# The arithmetic


def test_cpu_share_is_the_time_used_over_the_time_passed_per_vcpu() -> None:
    # 3 s of CPU in 10 s on 2 vCPUs: 15 % of what the capsule may use.
    assert metrics.cpu_share(1_000_000, 4_000_000, timedelta(seconds=10), 2) == (3.0, 15.0)


def test_cpu_share_is_capped_at_100_percent() -> None:
    assert metrics.cpu_share(0, 30_000_000, timedelta(seconds=10), 1) == (30.0, 100.0)


@pytest.mark.parametrize(
    ("previous", "current", "seconds"),
    [(None, 5, 10), (5, None, 10), (9_000_000, 1_000, 10), (1, 2, 0)],
    ids=["first reading", "not measured", "counter went back", "no time passed"],
)
def test_cpu_share_is_unknown_without_two_readings_apart(previous: Any, current: Any, seconds: int) -> None:
    assert metrics.cpu_share(previous, current, timedelta(seconds=seconds), 1) == (None, None)


# Samples


T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_a_heartbeats_readings_become_a_sample(reporting_host: Host, two_vcpu_capsule: Sandbox) -> None:
    entry = {"id": two_vcpu_capsule.pk, "state": "running", "pty_sessions": 0}
    record_heartbeat(
        reporting_host, {"sandboxes": [{**entry, "cpu_usec": 5, "mem_bytes": 7 * MIB, "disk_bytes": 4096}]}
    )
    [row] = CapsuleSample.objects.filter(sandbox=two_vcpu_capsule)
    assert (row.cpu_usec, row.cpu_pct, row.mem_bytes, row.disk_bytes) == (5, None, 7 * MIB, 4096)


def test_malformed_readings_count_as_not_measured(reporting_host: Host, two_vcpu_capsule: Sandbox) -> None:
    entry = {"id": two_vcpu_capsule.pk, "state": "running", "pty_sessions": 0}
    record_heartbeat(
        reporting_host, {"sandboxes": [{**entry, "cpu_usec": -1, "mem_bytes": "lots", "disk_bytes": 9}]}
    )
    [row] = CapsuleSample.objects.filter(sandbox=two_vcpu_capsule)
    assert (row.cpu_usec, row.mem_bytes, row.disk_bytes) == (None, None, 9)


def test_cpu_pct_comes_from_successive_readings_normalised_to_vcpus(
    reporting_host: Host, two_vcpu_capsule: Sandbox
) -> None:
    sample(reporting_host, two_vcpu_capsule, T0, cpu_usec=10_000_000, mem=100 * MIB, disk=20 * MIB)
    sample(reporting_host, two_vcpu_capsule, T0 + timedelta(seconds=10), cpu_usec=25_000_000, mem=100 * MIB)
    first, second = CapsuleSample.objects.filter(sandbox=two_vcpu_capsule).order_by("at")
    assert (first.cpu_pct, first.cpu_seconds) == (None, None)
    # 15 s of CPU in 10 s of a 2-vCPU capsule: three quarters of it.
    assert (second.cpu_pct, second.cpu_seconds) == (75.0, 15.0)


def test_an_early_heartbeat_takes_no_second_sample(reporting_host: Host, two_vcpu_capsule: Sandbox) -> None:
    assert sample(reporting_host, two_vcpu_capsule, T0, cpu_usec=1) == 1
    assert sample(reporting_host, two_vcpu_capsule, T0 + timedelta(seconds=2), cpu_usec=2) == 0
    assert sample(reporting_host, two_vcpu_capsule, T0 + timedelta(seconds=6), cpu_usec=3) == 1


def test_a_capsule_without_readings_gets_samples_that_say_so(
    team: Team, reporting_host: Host, two_vcpu_capsule: Sandbox
) -> None:
    assert sample(reporting_host, two_vcpu_capsule, T0) == 1
    assert sample(reporting_host, two_vcpu_capsule, T0 + timedelta(seconds=10)) == 1
    assert set(CapsuleSample.objects.values_list("cpu_pct", "mem_bytes", "disk_bytes")) == {
        (None, None, None)
    }
    # Nothing measured adds nothing to the team's usage, not even a row of zeros.
    assert not DailyUsage.objects.exists()


def test_only_capsules_of_the_reporting_host_that_hold_resources_are_sampled(
    team: Team, reporting_host: Host, two_vcpu_capsule: Sandbox
) -> None:
    elsewhere = Host.objects.create(address="10.0.0.8:50071")
    theirs = Sandbox.objects.create(team=team, host=elsewhere, status=Status.RUNNING)
    stopped = Sandbox.objects.create(team=team, host=reporting_host, status=Status.STOPPED)
    readings = [metrics.Reading(c.pk, 1, 1, 1) for c in (two_vcpu_capsule, theirs, stopped)]
    assert metrics.record_samples(reporting_host, readings, T0) == 1
    assert list(CapsuleSample.objects.values_list("sandbox_id", flat=True)) == [two_vcpu_capsule.pk]


def test_usage_adds_cpu_minutes_and_memory_mb_minutes_to_the_day(
    team: Team, reporting_host: Host, two_vcpu_capsule: Sandbox
) -> None:
    sample(reporting_host, two_vcpu_capsule, T0, cpu_usec=0, mem=512 * MIB)
    for step in (1, 2):
        at = T0 + timedelta(seconds=10 * step)
        sample(reporting_host, two_vcpu_capsule, at, cpu_usec=step * 6_000_000, mem=512 * MIB)
    [day] = DailyUsage.objects.filter(team=team)
    # 12 s of CPU; 512 MiB held for 20 s.
    assert day.day == T0.date()
    assert day.cpu_minutes == pytest.approx(12 / 60)
    assert day.ram_mb_minutes == pytest.approx(512 * 20 / 60)


def test_memory_is_not_counted_across_a_gap_the_host_was_away(
    team: Team, reporting_host: Host, two_vcpu_capsule: Sandbox
) -> None:
    sample(reporting_host, two_vcpu_capsule, T0, cpu_usec=0, mem=512 * MIB)
    sample(reporting_host, two_vcpu_capsule, T0 + timedelta(hours=1), cpu_usec=60_000_000, mem=512 * MIB)
    [day] = DailyUsage.objects.filter(team=team)
    # The CPU counter is cumulative, so the CPU used meanwhile is known; the memory held is not.
    assert (day.cpu_minutes, day.ram_mb_minutes) == (1.0, 0.0)


# Team samples and retention


def test_team_samples_and_pruning_happen_once_per_interval(
    team: Team, other_team: Team, reporting_host: Host
) -> None:
    Sandbox.objects.create(team=team, host=reporting_host, status=Status.RUNNING, vcpus=2, memory_mb=1024)
    Sandbox.objects.create(team=team, host=reporting_host, status=Status.PAUSED, vcpus=1, memory_mb=512)
    Sandbox.objects.create(team=other_team, host=reporting_host, status=Status.STOPPED)
    assert metrics.housekeeping(T0)
    assert not metrics.housekeeping(T0 + timedelta(seconds=5))
    assert metrics.housekeeping(T0 + timedelta(seconds=10))
    assert TeamSample.objects.filter(team=team).count() == 2
    row = TeamSample.objects.filter(team=team).latest("at")
    assert (row.running, row.vcpus, row.memory_mb) == (1, 3, 1536)


def test_pruning_keeps_each_kind_for_its_retention(
    settings: Any, team: Team, reporting_host: Host, two_vcpu_capsule: Sandbox
) -> None:
    settings.WRENN_METRICS_RETENTION_HOURS = 24
    settings.WRENN_USAGE_RETENTION_DAYS = 30
    now = T0
    for age in (timedelta(hours=23), timedelta(hours=25)):
        CapsuleSample.objects.create(sandbox=two_vcpu_capsule, at=now - age)
    for age in (timedelta(days=29), timedelta(days=31)):
        TeamSample.objects.create(team=team, at=now - age, running=1, vcpus=1, memory_mb=1)
        DailyUsage.objects.create(team=team, day=(now - age).date())
    assert metrics.prune(now) == 3
    assert [now - at for at in CapsuleSample.objects.values_list("at", flat=True)] == [timedelta(hours=23)]
    assert [now - at for at in TeamSample.objects.values_list("at", flat=True)] == [timedelta(days=29)]
    assert list(DailyUsage.objects.values_list("day", flat=True)) == [(now - timedelta(days=29)).date()]


def test_each_monitor_pass_does_the_housekeeping(team: Team, reporting_host: Host) -> None:
    Sandbox.objects.create(team=team, host=reporting_host, status=Status.RUNNING, vcpus=2, memory_mb=256)
    call_command("monitor", "--once")
    [row] = TeamSample.objects.filter(team=team)
    assert (row.running, row.vcpus, row.memory_mb) == (1, 2, 256)


def test_a_heartbeats_samples_cost_a_few_queries_however_many_capsules_and_teams(
    reporting_host: Host, django_assert_max_num_queries: Any
) -> None:
    teams = [Team.objects.create(name=f"t{n}", slug=f"t{n}") for n in range(4)]
    capsules = [Sandbox.objects.create(team=team, host=reporting_host) for team in teams for _ in range(3)]
    Sandbox.objects.filter(pk__in=[c.pk for c in capsules]).update(status=Status.RUNNING)
    readings = [metrics.Reading(c.pk, 1_000, MIB, MIB) for c in capsules]
    metrics.record_samples(reporting_host, readings, T0)
    later = [metrics.Reading(c.pk, 2_000_000, MIB, MIB) for c in capsules]
    # The capsules with their previous samples, the new samples, the days' rows, their sums.
    with django_assert_max_num_queries(4):
        assert metrics.record_samples(reporting_host, later, T0 + timedelta(seconds=10)) == 12
    assert {round(d.cpu_minutes, 6) for d in DailyUsage.objects.all()} == {round(3 * 1.999 / 60, 6)}
