"""Per-team quotas: how many capsules, vCPUs and MB of memory a team's capsules may hold at once.

A capsule holds its share from creation until it is destroyed: every status in
`states.OCCUPYING` counts, paused and missing ones included (a paused capsule's memory stays
allocated on its host, and resuming it asks for no quota). The defaults are settings
(`WRENN_TEAM_MAX_*`, read at call time); a team's own fields override them, null meaning the
default. `capsules.actions.create_capsule` checks them with the team's row locked.
"""

from dataclasses import dataclass

from django.conf import settings
from django.db.models import Count, Sum
from django.db.models.functions import Coalesce

from capsules.models import Sandbox, Team
from capsules.states import OCCUPYING


@dataclass(frozen=True)
class Resources:
    """A team's limits, or what its capsules hold."""

    capsules: int
    vcpus: int
    memory_mb: int


class QuotaExceeded(Exception):
    """A capsule would take its team past a limit; `message` names each limit, its value and the use."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def default_quota() -> Resources:
    return Resources(
        capsules=int(settings.WRENN_TEAM_MAX_CAPSULES),
        vcpus=int(settings.WRENN_TEAM_MAX_VCPUS),
        memory_mb=int(settings.WRENN_TEAM_MAX_MEMORY_MB),
    )


def quota_of(team: Team) -> Resources:
    """The team's limits: its own where it has one, else the settings' defaults."""
    default = default_quota()
    return Resources(
        capsules=default.capsules if team.max_capsules is None else team.max_capsules,
        vcpus=default.vcpus if team.max_vcpus is None else team.max_vcpus,
        memory_mb=default.memory_mb if team.max_memory_mb is None else team.max_memory_mb,
    )


def usage_of(team: Team) -> Resources:
    """What the team's capsules hold now."""
    totals = Sandbox.objects.filter(team=team, status__in=OCCUPYING).aggregate(
        capsules=Count("pk"),
        vcpus=Coalesce(Sum("vcpus"), 0),
        memory_mb=Coalesce(Sum("memory_mb"), 0),
    )
    return Resources(capsules=totals["capsules"], vcpus=totals["vcpus"], memory_mb=totals["memory_mb"])


def _count(number: int, unit: str) -> str:
    return f"{number} {unit}" if number == 1 else f"{number} {unit}s"


def excesses(quota: Resources, usage: Resources, vcpus: int, memory_mb: int) -> list[str]:
    """One sentence for each limit that one more capsule of this size would pass."""
    found = []
    if usage.capsules + 1 > quota.capsules:
        found.append(
            f"capsule quota exceeded: the team's limit is {_count(quota.capsules, 'capsule')} "
            f"and it has {usage.capsules}"
        )
    if usage.vcpus + vcpus > quota.vcpus:
        found.append(
            f"vCPU quota exceeded: the team's limit is {_count(quota.vcpus, 'vCPU')}, its capsules "
            f"hold {usage.vcpus} and this one asks for {vcpus}"
        )
    if usage.memory_mb + memory_mb > quota.memory_mb:
        found.append(
            f"memory quota exceeded: the team's limit is {quota.memory_mb} MB, its capsules "
            f"hold {usage.memory_mb} MB and this one asks for {memory_mb} MB"
        )
    return found


def check_quota(team: Team, vcpus: int, memory_mb: int) -> None:
    """Raise QuotaExceeded if one more capsule of this size would take the team past a limit.

    Race-free only when the caller holds the team's row locked until the capsule is saved.
    """
    found = excesses(quota_of(team), usage_of(team), vcpus, memory_mb)
    if found:
        raise QuotaExceeded("; ".join(found) + " (paused capsules count until they are destroyed)")
