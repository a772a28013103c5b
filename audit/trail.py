"""Writing the audit trail: `record(action, actor, …)` adds one AuditEvent.

Call it inside the transaction of the change it records, so the event and the change are written
together or not at all; a refusal or a failure is recorded with outcome "failure" and its reason
(outside any transaction that rolls back, or it is rolled back with it). Who did it is an
`Actor`; where it came from a `Where` (`where_from_request` for a view, `where_from_scope` for a
socket).
"""

from __future__ import annotations

import ipaddress
import os
import socket
import uuid
from dataclasses import dataclass, field
from typing import Any

from audit.models import AuditEvent

# What can be recorded. A new kind of event is added here first.
CAPSULE_CREATE = "capsule.create"
CAPSULE_PAUSE = "capsule.pause"
CAPSULE_RESUME = "capsule.resume"
CAPSULE_DESTROY = "capsule.destroy"
TERMINAL_START = "terminal.start"
TERMINAL_JOIN = "terminal.join"
TERMINAL_LEAVE = "terminal.leave"
TERMINAL_KILL = "terminal.kill"
TERMINAL_CONTROL = "terminal.control"
SHARE_CREATE = "share.create"
SHARE_REVOKE = "share.revoke"
API_KEY_CREATE = "api_key.create"
API_KEY_REVOKE = "api_key.revoke"
AUTH_FAILED = "auth.failed"
QUOTA_REFUSED = "quota.refused"
ACTIONS = (
    CAPSULE_CREATE,
    CAPSULE_PAUSE,
    CAPSULE_RESUME,
    CAPSULE_DESTROY,
    TERMINAL_START,
    TERMINAL_JOIN,
    TERMINAL_LEAVE,
    TERMINAL_KILL,
    TERMINAL_CONTROL,
    SHARE_CREATE,
    SHARE_REVOKE,
    API_KEY_CREATE,
    API_KEY_REVOKE,
    AUTH_FAILED,
    QUOTA_REFUSED,
)

SUCCESS = AuditEvent.Outcome.SUCCESS
FAILURE = AuditEvent.Outcome.FAILURE
MAX_REASON = 2000
MAX_ORIGIN = 300


@dataclass(frozen=True)
class Actor:
    """Who acted. ``type`` is one of AuditEvent.ActorType; ``label`` how people see it
    ("user:alice", "key:wrn_ab12cd34", "share:shr-…", "host:10.0.0.5:50071"); the ids link it."""

    type: str
    label: str = ""
    user_id: int | None = None
    api_key_id: int | None = None
    host_id: int | None = None
    share_id: str = ""


SYSTEM = Actor(AuditEvent.ActorType.SYSTEM, "system")
ANONYMOUS = Actor(AuditEvent.ActorType.ANONYMOUS, "anonymous")


def user_actor(user: Any) -> Actor:
    return Actor(AuditEvent.ActorType.USER, f"user:{user.get_username()}", user_id=user.pk)


def key_actor(key: Any) -> Actor:
    return Actor(AuditEvent.ActorType.API_KEY, f"key:{key.prefix}", api_key_id=key.pk)


def this_worker() -> str:
    """This process, as "hostname:pid": which of several daphne workers (or the monitor) served it."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class Where:
    """Where a request came from: the client's address, the Origin it named, the serving worker."""

    client_address: str | None = None
    origin: str = ""
    worker: str = field(default_factory=this_worker)


def _address(value: str | None) -> str | None:
    """A valid IP address, else None (a Unix socket's peer, a malformed header)."""
    if not value:
        return None
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        return None


def where_from_request(request: Any) -> Where:
    """Where a Django or DRF request came from (REMOTE_ADDR: the proxy in front sets it right)."""
    meta = getattr(request, "META", {})
    return Where(_address(meta.get("REMOTE_ADDR")), (meta.get("HTTP_ORIGIN") or "")[:MAX_ORIGIN])


def where_from_scope(scope: dict[str, Any]) -> Where:
    """Where an ASGI connection (a terminal socket) came from."""
    client = scope.get("client") or (None, None)
    origin = ""
    for name, value in scope.get("headers", []):
        if name == b"origin":
            origin = bytes(value).decode("latin1")[:MAX_ORIGIN]
            break
    return Where(_address(client[0]), origin)


def record(
    action: str,
    actor: Actor,
    *,
    outcome: str = SUCCESS,
    reason: str = "",
    team_id: uuid.UUID | str | None = None,
    capsule_id: str = "",
    session_tag: str = "",
    where: Where | None = None,
    detail: dict[str, Any] | None = None,
) -> AuditEvent:
    """Adds one event to the trail (in the caller's transaction, if any) and returns it."""
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}")
    where = where or Where()
    return AuditEvent.objects.create(
        action=action,
        outcome=outcome,
        reason=reason[:MAX_REASON],
        actor_type=actor.type,
        actor_label=actor.label,
        user_id=actor.user_id,
        api_key_id=actor.api_key_id,
        host_id=actor.host_id,
        share_id=actor.share_id,
        team_id=team_id,
        capsule_id=capsule_id,
        session_tag=session_tag,
        client_address=where.client_address,
        worker=where.worker,
        origin=where.origin,
        detail=detail or {},
    )
