"""Host agents as the control plane sees them: heartbeat tokens, heartbeats, liveness and placement.

An agent reports in with `POST /v1/hosts/heartbeat` (see hosts_api.py) carrying a JSON object:

    {"address": "10.0.0.5:50071",              # optional: where its gRPC server is reachable
     "runtime": "bwrap", "version": "0.2.0",   # optional
     "capacity": {"vcpus": 8, "memory_mb": 16384},   # optional; top-level vcpus/memory_mb also work
     "sandboxes": [{"id": "cl-…", "state": "running", "pty_sessions": 1,   # optional
                    "oom_kills": 0,                      # optional: kills since it was created
                    "cpu_usec": 1234, "mem_bytes": 5678,  # optional: CPU time used (cumulative),
                    "disk_bytes": 4096,                   # memory in use, disk image allocated
                    "pty_tags": ["pty-0a1b2c3d"]}],      # optional: the live sessions' tags
     "isolation": {"network": {"on": true, "reason": ""},                  # optional
                   "limits": {"on": false, "reason": "no writable cgroup hierarchy"},
                   "seccomp": {"on": true, "reason": ""}}}

Without "sandboxes" the capsules of the host are left alone; with it (even empty) the list is
the truth about which capsules exist there, and about their live terminal sessions: the rows of
the others close (capsules/terminals.py), from "pty_tags", or for an older agent that sends no tags,
from "pty_sessions" 0. A sandbox's "oom_kills" growing records an event on the capsule
(capsules/events.py); one that is missing or not a count (older agents) is ignored, and so are
"pty_tags" that are not a list of tags. "cpu_usec", "mem_bytes" and "disk_bytes" become the
capsule's metrics samples (capsules/metrics.py); one missing or malformed is taken as not measured.
"isolation" says which parts of isolation the host gives: parts beyond those three are kept (as
`{"on", "reason"}`; other keys inside a part are dropped), and without it the host's earlier
report stays.

A host that has never sent a heartbeat (last_heartbeat_at None, like the one `manage.py demo`
creates) is trusted as it is: `check_hosts` only declares dead a host that reported and then
went quiet.
"""

import logging
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from capsules import actions, events, live, metrics, terminals
from capsules.keys import hash_key
from capsules.models import Host, Sandbox
from capsules.validation import ValidationFailed
from protos import rules

log = logging.getLogger(__name__)

TOKEN_PREFIX = "wrh_"  # noqa: S105 - a marker, not a secret
DISPLAY_PREFIX_LENGTH = 12
_TOKEN_RE = re.compile(r"wrh_[0-9a-f]{48}")

# A heartbeat lists the sandboxes the agent had when it sent it; a capsule that reached a settled
# status just before that report arrived may not be in it yet.
MISSING_GRACE = timedelta(seconds=5)
MAX_REPORTED_SANDBOXES = 10_000
MAX_REPORTED_TAGS = 4096
_MAX_INT = 2**31 - 1
_MAX_BIG = 2**63 - 1
MAX_ISOLATION_PARTS = 16
MAX_ISOLATION_REASON = 500
_PART_RE = re.compile(r"[a-z][a-z0-9_]{0,31}")
_ADDRESS_RE = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):(\d{1,5})")


def dead_after() -> timedelta:
    return timedelta(seconds=float(settings.WRENN_HOST_DEAD_AFTER_SEC))


# Tokens


# Host tokens are kept the way API keys are: only their SHA-256.
hash_token = hash_key


def issue_host_token(host: Host) -> str:
    """Give `host` a new heartbeat token, replacing any earlier one; returns the only copy of it."""
    raw_token = TOKEN_PREFIX + secrets.token_hex(24)
    host.token_prefix = raw_token[:DISPLAY_PREFIX_LENGTH]
    host.token_hash = hash_token(raw_token)
    if host._state.adding:
        host.save()
    else:
        host.save(update_fields=["token_prefix", "token_hash"])
    return raw_token


def host_for_token(raw_token: str) -> Host | None:
    """The host whose heartbeat token this is, or None for unknown or malformed tokens."""
    if not isinstance(raw_token, str) or not _TOKEN_RE.fullmatch(raw_token):
        return None
    return Host.objects.filter(token_hash=hash_token(raw_token)).first()


# Heartbeats


@dataclass(frozen=True)
class ReportedSandbox:
    id: str
    state: str
    pty_sessions: int
    # None when not reported (older agents) or not a count.
    oom_kills: int | None = None
    # None when not reported (older agents) or not a list of tags.
    pty_tags: frozenset[str] | None = None
    # Resource readings (hostagent/usage.py); None when not reported (no cgroup, older agents).
    cpu_usec: int | None = None
    mem_bytes: int | None = None
    disk_bytes: int | None = None

    @property
    def live_tags(self) -> frozenset[str] | None:
        """The live sessions' tags, if known: listed, or none at all when it counts 0."""
        if self.pty_tags is not None:
            return self.pty_tags
        return frozenset() if self.pty_sessions == 0 else None


@dataclass(frozen=True)
class Heartbeat:
    address: str | None
    runtime: str | None
    version: str | None
    vcpus: int | None
    memory_mb: int | None
    sandboxes: list[ReportedSandbox] | None
    isolation: dict[str, dict[str, Any]] | None = None


def _count(name: str, value: Any, most: int = _MAX_INT) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= most:
        raise ValidationFailed(f"{name} must be a non-negative integer")
    return value


def _text(name: str, value: Any, max_length: int) -> str:
    if not isinstance(value, str) or len(value) > max_length:
        raise ValidationFailed(f"{name} must be a string of at most {max_length} characters")
    return value


def clean_address(value: Any) -> str:
    """`host:port` (host a name, IPv4 or [IPv6]), or ValidationFailed."""
    address = _text("address", value, 255)
    match = _ADDRESS_RE.fullmatch(address)
    if match is None or not 1 <= int(match.group(1)) <= 65535:
        raise ValidationFailed(f"address must be host:port, got {address!r}")
    return address


def _reported_sandbox(index: int, item: Any) -> ReportedSandbox:
    name = f"sandboxes[{index}]"
    if not isinstance(item, dict):
        raise ValidationFailed(f"{name} must be an object with id, state and pty_sessions")
    if "id" not in item:
        raise ValidationFailed(f"{name}.id is required")
    return ReportedSandbox(
        id=_text(f"{name}.id", item["id"], 64),
        state=_text(f"{name}.state", item.get("state", ""), 16),
        pty_sessions=_count(f"{name}.pty_sessions", item.get("pty_sessions", 0)),
        oom_kills=_optional_count(f"{name}.oom_kills", item.get("oom_kills")),
        pty_tags=_optional_tags(f"{name}.pty_tags", item.get("pty_tags")),
        cpu_usec=_optional_count(f"{name}.cpu_usec", item.get("cpu_usec"), _MAX_BIG),
        mem_bytes=_optional_count(f"{name}.mem_bytes", item.get("mem_bytes"), _MAX_BIG),
        disk_bytes=_optional_count(f"{name}.disk_bytes", item.get("disk_bytes"), _MAX_BIG),
    )


def _optional_count(name: str, value: Any, most: int = _MAX_INT) -> int | None:
    """A count that only adds to the report: when it is malformed the heartbeat still counts."""
    if value is None:
        return None
    try:
        return _count(name, value, most)
    except ValidationFailed as exc:
        log.warning("heartbeat: %s ignored (got %.40r)", exc.message, value)
        return None


def _optional_tags(name: str, value: Any) -> frozenset[str] | None:
    """Tags that only add to the report: malformed, they are ignored and the heartbeat counts."""
    if value is None:
        return None
    if (
        isinstance(value, list)
        and len(value) <= MAX_REPORTED_TAGS
        and all(isinstance(tag, str) and rules.is_tag(tag) for tag in value)
    ):
        return frozenset(value)
    log.warning(
        "heartbeat: %s ignored: not a list of at most %d tags (got %.60r)", name, MAX_REPORTED_TAGS, value
    )
    return None


def _isolation(value: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(value, dict) or len(value) > MAX_ISOLATION_PARTS:
        raise ValidationFailed(
            f"isolation must be an object of at most {MAX_ISOLATION_PARTS} parts, "
            'such as {"network": {"on": true, "reason": ""}}'
        )
    parts = {}
    for part, report in value.items():
        if not _PART_RE.fullmatch(part):
            raise ValidationFailed(
                f"isolation part {part[:40]!r} must be 1 to 32 lowercase letters, digits or '_', "
                "starting with a letter"
            )
        name = f"isolation.{part}"
        if not isinstance(report, dict):
            raise ValidationFailed(f"{name} must be an object with on and reason")
        on = report.get("on")
        if not isinstance(on, bool):
            raise ValidationFailed(f"{name}.on must be true or false")
        reason = _text(f"{name}.reason", report.get("reason", ""), MAX_ISOLATION_REASON)
        parts[part] = {"on": on, "reason": reason}
    return parts


def parse_heartbeat(payload: Any) -> Heartbeat:
    """The checked heartbeat, or ValidationFailed naming the first bad field."""
    if not isinstance(payload, dict):
        raise ValidationFailed("the heartbeat must be a JSON object")
    capacity = payload.get("capacity", {})
    if not isinstance(capacity, dict):
        raise ValidationFailed("capacity must be an object with vcpus and memory_mb")
    vcpus = capacity.get("vcpus", payload.get("vcpus"))
    memory_mb = capacity.get("memory_mb", payload.get("memory_mb"))
    sandboxes = payload.get("sandboxes")
    if sandboxes is not None and (not isinstance(sandboxes, list) or len(sandboxes) > MAX_REPORTED_SANDBOXES):
        raise ValidationFailed(f"sandboxes must be a list of at most {MAX_REPORTED_SANDBOXES} objects")
    return Heartbeat(
        address=None if payload.get("address") is None else clean_address(payload["address"]),
        runtime=None if payload.get("runtime") is None else _text("runtime", payload["runtime"], 32),
        version=None if payload.get("version") is None else _text("version", payload["version"], 64),
        vcpus=None if vcpus is None else _count("capacity.vcpus", vcpus),
        memory_mb=None if memory_mb is None else _count("capacity.memory_mb", memory_mb),
        sandboxes=(None if sandboxes is None else [_reported_sandbox(i, s) for i, s in enumerate(sandboxes)]),
        isolation=None if payload.get("isolation") is None else _isolation(payload["isolation"]),
    )


def record_heartbeat(host: Host, payload: Any) -> Host:
    """Record that `host` is alive and what it reports; returns the updated host.

    Raises ValidationFailed for a malformed payload or an address another host already has.
    """
    beat = parse_heartbeat(payload)
    now = timezone.now()
    with transaction.atomic():
        host = Host.objects.select_for_update().get(pk=host.pk)
        came_back = host.status == Host.Status.UNREACHABLE
        host.last_heartbeat_at = now
        if host.status != Host.Status.DRAINING:
            host.status = Host.Status.ONLINE
        if beat.address is not None:
            host.address = beat.address
        for name in ("runtime", "version", "vcpus", "memory_mb", "isolation"):
            value = getattr(beat, name)
            if value is not None:
                setattr(host, name, value)
        try:
            with transaction.atomic():
                host.save()
        except IntegrityError:
            raise ValidationFailed(f"address {beat.address} belongs to another host") from None
        if beat.sandboxes is not None:
            _reconcile(host, beat.sandboxes, now)
            kills = {s.id: s.oom_kills for s in beat.sandboxes if s.oom_kills is not None}
            events.record_oom_kills(host, kills, now)
            terminals.reconcile_sessions(host, {s.id: s.live_tags for s in beat.sandboxes}, now)
            metrics.record_samples(host, [_reading(s) for s in beat.sandboxes], now)
        if came_back:
            live.host_event(live.HOST_UP, host)
    return host


def _reading(sandbox: ReportedSandbox) -> metrics.Reading:
    return metrics.Reading(sandbox.id, sandbox.cpu_usec, sandbox.mem_bytes, sandbox.disk_bytes)


def _reconcile(host: Host, reported: list[ReportedSandbox], now: datetime) -> None:
    states = {sandbox.id: sandbox.state for sandbox in reported}
    back = Sandbox.objects.select_for_update().filter(
        host=host, status=Sandbox.Status.MISSING, pk__in=list(states)
    )
    for capsule in back:
        actions.restore_capsule(capsule, states[capsule.pk])
        log.info("capsule %s is back on host %s (%s)", capsule.pk, host.address, capsule.status)
    # Capsules in the middle of an operation are left to that operation.
    unreported = Sandbox.objects.filter(
        host=host,
        status__in=[Sandbox.Status.RUNNING, Sandbox.Status.PAUSED],
        last_updated__lt=now - MISSING_GRACE,
    ).exclude(pk__in=list(states))
    lost = actions.mark_missing(unreported, now)
    if lost:
        log.warning("host %s no longer reports %d capsule(s); marked missing", host.address, lost)


# Liveness


def check_hosts(now: datetime | None = None) -> list[Host]:
    """Declare dead the hosts that reported before but not within WRENN_HOST_DEAD_AFTER_SEC.

    An online host becomes unreachable (a draining one stays draining), and its capsules that
    were running or on their way there become missing. Returns the hosts that changed.
    """
    cutoff = (now or timezone.now()) - dead_after()
    quiet = Q(status__in=[Host.Status.ONLINE, Host.Status.DRAINING], last_heartbeat_at__lt=cutoff)
    changed = []
    for host_id in Host.objects.filter(quiet).values_list("pk", flat=True):
        with transaction.atomic():
            # Re-checked under the lock: a heartbeat may have arrived since.
            host = Host.objects.select_for_update().filter(quiet, pk=host_id).first()
            if host is None:
                continue
            went_down = host.status == Host.Status.ONLINE
            if went_down:
                host.status = Host.Status.UNREACHABLE
                host.save(update_fields=["status"])
                live.host_event(live.HOST_DOWN, host)
            lost = actions.mark_missing(Sandbox.objects.filter(host=host), timezone.now())
        if went_down or lost:
            log.warning(
                "host %s last reported at %s; now %s, %d capsule(s) missing",
                host.address,
                host.last_heartbeat_at,
                host.status,
                lost,
            )
            changed.append(host)
    return changed
