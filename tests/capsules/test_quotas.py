"""Fair capacity: per-team quotas on capsules, vCPUs and memory, checked under the team's lock, and
placement that keeps the last of each host for teams that hold little of it.

Capsules that should start run on the session's real host agent (`agent_host`); capsules that only
fill a quota or a host are rows.
"""

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import connection, transaction
from pytest_django import Settings

from capsules.actions import ActionError, create_capsule, destroy_capsule, pause_capsule
from capsules.models import Host, Sandbox, Team
from capsules.placement import HeadroomReserved, choose_host, within_share
from capsules.quotas import Resources, excesses, quota_of, usage_of
from capsules.states import OCCUPYING
from tests.support.polling import EVERY, WITHIN
from wrenn.settings import _env_int

Status = Sandbox.Status
PAUSED_NOTE = " (paused capsules count until they are destroyed)"


# Fixtures and helpers


@pytest.fixture
def quota_host(agent_host: Host) -> Iterator[Host]:
    """The real agent's host; what a test started there is destroyed after it."""
    yield agent_host
    for sandbox in Sandbox.objects.filter(host=agent_host).exclude(status=Status.STOPPED):
        with contextlib.suppress(ActionError):
            destroy_capsule(sandbox)


def hold(team: Team, host: Host | None = None, status: str = Status.RUNNING, **fields: Any) -> Sandbox:
    """A capsule row that holds its share of the team's quota (and of its host) without existing."""
    return Sandbox.objects.create(team=team, host=host, status=status, **fields)


def limit(team: Team, **quotas: int | None) -> None:
    Team.objects.filter(pk=team.pk).update(**quotas)


def refused(team: Team, **params: Any) -> ActionError:
    with pytest.raises(ActionError) as caught:
        create_capsule(team, **params)
    return caught.value


# Limits and use


def test_a_team_without_overrides_has_the_settings_defaults(team: Team, settings: Settings) -> None:
    settings.WRENN_TEAM_MAX_CAPSULES = 3
    settings.WRENN_TEAM_MAX_VCPUS = 5
    settings.WRENN_TEAM_MAX_MEMORY_MB = 4096
    assert quota_of(team) == Resources(capsules=3, vcpus=5, memory_mb=4096)


def test_a_teams_own_fields_override_each_default(team: Team, settings: Settings) -> None:
    settings.WRENN_TEAM_MAX_CAPSULES = 3
    team.max_vcpus = 64
    team.max_capsules = 0  # 0 is a limit (none allowed), not "unset"
    assert quota_of(team) == Resources(capsules=0, vcpus=64, memory_mb=settings.WRENN_TEAM_MAX_MEMORY_MB)


def test_the_shipped_defaults_let_a_team_create_the_largest_capsule(settings: Settings) -> None:
    assert settings.WRENN_TEAM_MAX_CAPSULES == 20
    assert settings.WRENN_TEAM_MAX_VCPUS == 32 >= settings.WRENN_MAX_VCPUS
    assert settings.WRENN_TEAM_MAX_MEMORY_MB == 32768 >= settings.WRENN_MAX_MEMORY_MB


@pytest.mark.parametrize("status", sorted(OCCUPYING))
def test_every_capsule_that_occupies_a_host_counts(team: Team, host: Host, status: str) -> None:
    hold(team, host, status, vcpus=2, memory_mb=1024)
    assert usage_of(team) == Resources(capsules=1, vcpus=2, memory_mb=1024)


@pytest.mark.parametrize("status", [Status.STOPPED, Status.ERROR])
def test_stopped_and_failed_capsules_do_not_count(team: Team, host: Host, status: str) -> None:
    hold(team, host, status, vcpus=2, memory_mb=1024)
    assert usage_of(team) == Resources(capsules=0, vcpus=0, memory_mb=0)


def test_other_teams_capsules_do_not_count(team: Team, other_team: Team, host: Host) -> None:
    hold(other_team, host)
    hold(team, host, vcpus=3, memory_mb=256)
    assert usage_of(team) == Resources(capsules=1, vcpus=3, memory_mb=256)


def test_a_capsule_within_every_limit_passes() -> None:
    quota = Resources(capsules=2, vcpus=4, memory_mb=2048)
    assert excesses(quota, Resources(capsules=1, vcpus=2, memory_mb=1024), 2, 1024) == []


def test_each_limit_passed_is_named_with_its_value_and_the_use() -> None:
    quota = Resources(capsules=1, vcpus=1, memory_mb=512)
    assert excesses(quota, Resources(capsules=1, vcpus=1, memory_mb=512), 2, 1024) == [
        "capsule quota exceeded: the team's limit is 1 capsule and it has 1",
        "vCPU quota exceeded: the team's limit is 1 vCPU, its capsules hold 1 and this one asks for 2",
        "memory quota exceeded: the team's limit is 512 MB, its capsules hold 512 MB "
        "and this one asks for 1024 MB",
    ]


def setting_error(monkeypatch: pytest.MonkeyPatch, name: str, raw: str, **bounds: int) -> str:
    monkeypatch.setenv(name, raw)
    with pytest.raises(ImproperlyConfigured) as caught:
        _env_int(name, 20, **bounds)
    return str(caught.value)


@pytest.mark.parametrize("name", ["WRENN_TEAM_MAX_CAPSULES", "WRENN_HOST_HEADROOM_PERCENT"])
def test_a_setting_that_is_not_a_number_is_refused_with_its_name(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    assert setting_error(monkeypatch, name, "lots") == f"{name} must be an integer, got 'lots'"


def test_a_setting_out_of_its_range_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    assert (
        setting_error(monkeypatch, "WRENN_HOST_HEADROOM_PERCENT", "60", high=50)
        == "WRENN_HOST_HEADROOM_PERCENT must be between 0 and 50, got 60"
    )
    assert (
        setting_error(monkeypatch, "WRENN_TEAM_MAX_VCPUS", "-1")
        == "WRENN_TEAM_MAX_VCPUS must be at least 0, got -1"
    )


# Create against the quotas


def test_create_past_the_capsule_quota_is_refused_and_creates_nothing(team: Team, quota_host: Host) -> None:
    limit(team, max_capsules=2)
    hold(team, quota_host, Status.RUNNING)
    hold(team, quota_host, Status.PAUSED)
    error = refused(team)
    assert error.code == "quota_exceeded"
    assert (
        error.message == "capsule quota exceeded: the team's limit is 2 capsules and it has 2" + PAUSED_NOTE
    )
    assert Sandbox.objects.filter(team=team).count() == 2


def test_create_past_the_vcpu_quota_is_refused(team: Team, quota_host: Host) -> None:
    limit(team, max_vcpus=4)
    hold(team, quota_host, vcpus=3)
    error = refused(team, vcpus=2)
    assert (error.code, error.message) == (
        "quota_exceeded",
        "vCPU quota exceeded: the team's limit is 4 vCPUs, its capsules hold 3 and this one asks for 2"
        + PAUSED_NOTE,
    )


def test_create_past_the_memory_quota_is_refused(team: Team, quota_host: Host) -> None:
    limit(team, max_memory_mb=1024)
    hold(team, quota_host, memory_mb=768)
    error = refused(team, memory_mb=512)
    assert (error.code, error.message) == (
        "quota_exceeded",
        "memory quota exceeded: the team's limit is 1024 MB, its capsules hold 768 MB "
        "and this one asks for 512 MB" + PAUSED_NOTE,
    )


def test_create_that_fills_a_quota_exactly_is_allowed(team: Team, quota_host: Host) -> None:
    limit(team, max_capsules=2, max_vcpus=2, max_memory_mb=1024)
    hold(team, quota_host, vcpus=1, memory_mb=512)
    assert create_capsule(team, vcpus=1, memory_mb=512).status == Status.RUNNING


def test_a_quota_of_zero_allows_no_capsule(team: Team, quota_host: Host) -> None:
    limit(team, max_capsules=0)
    assert refused(team).message.startswith(
        "capsule quota exceeded: the team's limit is 0 capsules and it has 0"
    )


def test_the_quota_is_checked_before_any_host_is_looked_for(team: Team) -> None:
    limit(team, max_capsules=0)
    assert refused(team).code == "quota_exceeded"  # not host_unavailable: there is no host at all


def test_a_changed_default_applies_to_teams_without_their_own(
    team: Team, quota_host: Host, settings: Settings
) -> None:
    settings.WRENN_TEAM_MAX_CAPSULES = 1
    hold(team, quota_host)
    assert refused(team).code == "quota_exceeded"
    limit(team, max_capsules=2)
    assert create_capsule(team).status == Status.RUNNING


def test_one_teams_quota_does_not_limit_another(team: Team, other_team: Team, quota_host: Host) -> None:
    limit(team, max_capsules=1)
    hold(team, quota_host)
    assert create_capsule(other_team).status == Status.RUNNING


def test_destroying_a_capsule_frees_its_quota(team: Team, quota_host: Host) -> None:
    limit(team, max_capsules=1)
    first = create_capsule(team)
    assert refused(team).code == "quota_exceeded"
    destroy_capsule(first)
    assert create_capsule(team).status == Status.RUNNING


def test_pausing_a_capsule_does_not_free_its_quota(team: Team, quota_host: Host) -> None:
    limit(team, max_capsules=1)
    pause_capsule(create_capsule(team))
    assert refused(team).code == "quota_exceeded"


@pytest.mark.django_db(transaction=True)
def test_two_creates_of_one_team_cannot_both_take_its_last_slot(team: Team, quota_host: Host) -> None:
    """Both creates queue behind a lock the test holds on the team's row, so they reach the check
    together; if they did not take the lock (and count under it), both would get through."""
    limit(team, max_capsules=1)
    outcomes: list[str] = []

    def create() -> None:
        try:
            outcomes.append(create_capsule(team).status)
        except ActionError as exc:
            outcomes.append(exc.code)
        finally:
            connection.close()

    threads = [threading.Thread(target=create) for _ in range(2)]
    with transaction.atomic():
        Team.objects.select_for_update().get(pk=team.pk)
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + WITHIN
        while waiting_on_locks() < 2:
            assert time.monotonic() < deadline, "the creates never waited for the team's lock"
            assert all(thread.is_alive() for thread in threads), f"a create did not wait: {outcomes}"
            time.sleep(EVERY)
    for thread in threads:
        thread.join(WITHIN)
    assert sorted(outcomes) == ["quota_exceeded", Status.RUNNING]
    assert Sandbox.objects.filter(team=team).count() == 1


def waiting_on_locks() -> int:
    """Backends of this test database waiting for a lock (pg_stat_activity, re-read each time)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        row = cursor.fetchone()
    return int(row[0]) if row else 0


# Fair placement: the headroom of each host


@pytest.mark.parametrize(
    ("reserved_mb", "team_mb", "memory_mb", "allowed"),
    [
        (0, 0, 750, True),  # a team alone fills a host up to the headroom
        (500, 500, 250, True),
        (500, 500, 251, False),  # ... and not into it
        (750, 0, 250, True),  # another team takes the headroom, up to its 25% of the host
        (750, 0, 251, False),
        (850, 100, 150, True),
        (850, 100, 151, False),
        (750, 750, 1, False),
    ],
)
def test_the_last_quarter_of_a_host_is_kept_for_teams_that_hold_less_than_a_quarter(
    reserved_mb: int, team_mb: int, memory_mb: int, allowed: bool
) -> None:
    assert within_share(1000, reserved_mb, team_mb, memory_mb, 25) is allowed


def test_no_headroom_without_a_reported_memory_or_with_the_setting_off() -> None:
    assert within_share(0, 5000, 5000, 512, 25)
    assert within_share(1000, 0, 0, 1000, 0)


def test_placement_keeps_the_headroom_from_the_team_that_filled_the_host(
    team: Team, other_team: Team
) -> None:
    host = Host.objects.create(address="10.0.0.1:1", memory_mb=4096)
    hold(team, host, memory_mb=3072)
    with pytest.raises(HeadroomReserved):
        choose_host(1, 512, team_id=team.pk)
    assert choose_host(1, 512, team_id=other_team.pk) == host
    assert choose_host(1, 1024, team_id=other_team.pk) == host
    assert choose_host(1, 1025, team_id=other_team.pk) is None  # past the host's memory


def test_placement_goes_to_another_host_before_any_headroom(team: Team) -> None:
    # `full` holds fewer capsules, so placement looks at it first; the headroom sends the capsule on.
    full = Host.objects.create(address="10.0.0.1:1", memory_mb=4096)
    hold(team, full, memory_mb=3072)
    roomy = Host.objects.create(address="10.0.0.2:1", memory_mb=4096)
    hold(team, roomy, memory_mb=256)
    hold(team, roomy, memory_mb=256)
    assert choose_host(1, 512, team_id=team.pk) == roomy


def test_headroom_follows_its_setting(team: Team, settings: Settings) -> None:
    host = Host.objects.create(address="10.0.0.1:1", memory_mb=4096)
    hold(team, host, memory_mb=3072)
    settings.WRENN_HOST_HEADROOM_PERCENT = 0
    assert choose_host(1, 1024, team_id=team.pk) == host


def test_create_into_the_headroom_answers_host_unavailable_with_the_reason(
    team: Team, other_team: Team, quota_host: Host
) -> None:
    Host.objects.filter(pk=quota_host.pk).update(memory_mb=4096)
    hold(team, quota_host, memory_mb=3072)
    error = refused(team, memory_mb=512)
    assert (error.code, error.message) == (
        "host_unavailable",
        "no host has capacity for this capsule within the team's share: the last 25% of each host's "
        "memory is kept for teams that hold less than 25% of that host",
    )
    assert create_capsule(other_team, memory_mb=512).status == Status.RUNNING
