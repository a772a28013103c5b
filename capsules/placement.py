"""Where capsules go: which host agents are worth calling, and the host a new capsule is placed on."""

from django.db.models import Count, Q, Sum
from django.db.models.functions import Coalesce

from capsules.models import Host
from capsules.states import OCCUPYING


def is_reachable(host: Host | None) -> bool:
    """Whether calls to this host's agent are worth making (draining hosts still serve their capsules)."""
    return host is not None and host.status != Host.Status.UNREACHABLE


def choose_host(vcpus: int, memory_mb: int, *, for_update: bool = False) -> Host | None:
    """The least loaded online host that can take a capsule of this size, or None.

    Load is the number of capsules occupying the host, then the memory they reserve. A host that
    reported its memory (or vCPUs) is skipped when the capsule does not fit; one that did not is
    assumed to fit. With `for_update` (inside a transaction) the online hosts are locked so that
    concurrent placements see each other's capsules.
    """
    online = Host.objects.filter(status=Host.Status.ONLINE)
    if for_update:
        # FOR UPDATE cannot go with the GROUP BY below, so the rows are locked first, in pk order.
        list(online.select_for_update().order_by("pk").values_list("pk", flat=True))
    active = Q(sandboxes__status__in=OCCUPYING)
    candidates = online.annotate(
        load=Count("sandboxes", filter=active),
        reserved_mb=Coalesce(Sum("sandboxes__memory_mb", filter=active), 0),
    ).order_by("load", "reserved_mb", "created_at", "pk")
    for host in candidates:
        if host.memory_mb and host.reserved_mb + memory_mb > host.memory_mb:
            continue
        if host.vcpus and vcpus > host.vcpus:
            continue
        return host
    return None
