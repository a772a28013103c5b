"""Where capsules go: which host agents are worth calling, and the host a new capsule is placed on."""

from uuid import UUID

from django.conf import settings
from django.db.models import Count, Q, Sum
from django.db.models.functions import Coalesce

from capsules.models import Host
from capsules.states import OCCUPYING


class HeadroomReserved(Exception):
    """Some host has room for the capsule, but only in the headroom kept for other teams."""

    def __init__(self, percent: int) -> None:
        self.percent = percent
        super().__init__(
            f"no host has capacity for this capsule within the team's share: the last {percent}% of "
            f"each host's memory is kept for teams that hold less than {percent}% of that host"
        )


def is_reachable(host: Host | None) -> bool:
    """Whether calls to this host's agent are worth making (draining hosts still serve their capsules)."""
    return host is not None and host.status != Host.Status.UNREACHABLE


def headroom_percent() -> int:
    return int(settings.WRENN_HOST_HEADROOM_PERCENT)


def within_share(capacity_mb: int, reserved_mb: int, team_mb: int, memory_mb: int, percent: int) -> bool:
    """Whether a capsule of `memory_mb` may take it on a host of `capacity_mb`, of which `reserved_mb`
    is reserved by every team's capsules and `team_mb` by its own team's.

    The last `percent` of the host is headroom: a capsule may reach into it only if its team,
    counting it, holds no more than `percent` of the host. So one team can fill a host only up to
    `100 - percent`, and the rest stays for teams that have little there. A host that reported
    no memory, or a percent of 0, keeps no headroom.
    """
    if not capacity_mb or not percent:
        return True
    below_headroom = (reserved_mb + memory_mb) * 100 <= capacity_mb * (100 - percent)
    small_holder = (team_mb + memory_mb) * 100 <= capacity_mb * percent
    return below_headroom or small_holder


def choose_host(
    vcpus: int, memory_mb: int, *, team_id: UUID | None = None, for_update: bool = False
) -> Host | None:
    """The least loaded online host that can take a capsule of this size, or None.

    Load is the number of capsules occupying the host, then the memory they reserve. A host that
    reported its memory (or vCPUs) is skipped when the capsule does not fit; one that did not is
    assumed to fit. With `team_id`, a host is also skipped when the capsule would reach into the
    headroom kept for other teams (`within_share`); if that is the only reason no host fits,
    HeadroomReserved is raised instead of returning None. vCPUs are not reserved: a capsule's
    vcpus is a ceiling on its CPU time, and the kernel shares cores between capsules.

    With `for_update` (inside a transaction) the online hosts are locked so that concurrent
    placements see each other's capsules.
    """
    online = Host.objects.filter(status=Host.Status.ONLINE)
    if for_update:
        # FOR UPDATE cannot go with the GROUP BY below, so the rows are locked first, in pk order.
        list(online.select_for_update().order_by("pk").values_list("pk", flat=True))
    active = Q(sandboxes__status__in=OCCUPYING)
    candidates = online.annotate(
        load=Count("sandboxes", filter=active),
        reserved_mb=Coalesce(Sum("sandboxes__memory_mb", filter=active), 0),
        team_mb=Coalesce(Sum("sandboxes__memory_mb", filter=active & Q(sandboxes__team_id=team_id)), 0),
    ).order_by("load", "reserved_mb", "created_at", "pk")
    percent = headroom_percent()
    held_back = False
    for host in candidates:
        if host.memory_mb and host.reserved_mb + memory_mb > host.memory_mb:
            continue
        if host.vcpus and vcpus > host.vcpus:
            continue
        if team_id is not None and not within_share(
            host.memory_mb, host.reserved_mb, host.team_mb, memory_mb, percent
        ):
            held_back = True
            continue
        return host
    if held_back:
        raise HeadroomReserved(percent)
    return None
