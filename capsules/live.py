"""Lifecycle events for the teams' event streams (`GET /v1/events/stream`), built in one place and
published through the channel layer to one group per team, once the change is committed.

Publishers are the code that changes capsules and hosts (capsules/actions.py, capsules/hosts.py):
write, then publish; `transaction.on_commit` holds the event back until the write is visible, and
drops it when the transaction rolls back. A failure to publish (Redis away) is logged and never
fails the change itself. The event's body is the SDK's SSEEvent, serialised once here for every
subscriber.
"""

import json
import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.utils import timezone

from capsules.models import Host, Sandbox
from capsules.states import OCCUPYING

log = logging.getLogger(__name__)

# Event kinds, as the SSE `event:` line and the body's `event` name them.
CONNECTED = "connected"
CAPSULE_CREATE = "capsule.create"
CAPSULE_PAUSE = "capsule.pause"
CAPSULE_RESUME = "capsule.resume"
CAPSULE_DESTROY = "capsule.destroy"
CAPSULE_STATE_CHANGED = "capsule.state.changed"
HOST_UP = "host.up"
HOST_DOWN = "host.down"
KINDS = (
    CONNECTED,
    CAPSULE_CREATE,
    CAPSULE_PAUSE,
    CAPSULE_RESUME,
    CAPSULE_DESTROY,
    CAPSULE_STATE_CHANGED,
    HOST_UP,
    HOST_DOWN,
)

SUCCESS = "success"
ERROR = "error"

# The channel-layer message type a stream's subscription receives (handled as `team_event`).
TEAM_EVENT = "team.event"


@dataclass(frozen=True)
class Actor:
    """Who caused an event: `user` (id and name of the person), `api_key` (the key's prefix and
    name) or `system` (the control plane itself: the idle reaper, a host going quiet)."""

    type: str
    id: str = ""
    name: str = ""


SYSTEM = Actor("system")


def team_group(team_id: UUID | str) -> str:
    """The channel-layer group of one team's event streams (ASCII, under 100 characters)."""
    return f"events.team.{UUID(str(team_id)).hex}"


def event_body(
    kind: str,
    *,
    resource: tuple[str, str] | None = None,
    actor: Actor | None = None,
    outcome: str | None = None,
    error: str | None = None,
    metadata: dict[str, str] | None = None,
    sandbox: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> dict[str, Any]:
    """The SSEEvent body; keys without a value are left out, as the SDK's model allows."""
    body: dict[str, Any] = {"event": kind}
    if outcome is not None:
        body["outcome"] = outcome
    if resource is not None:
        body["resource"] = {"id": resource[0], "type": resource[1]}
    if actor is not None:
        body["actor"] = {key: value for key, value in asdict(actor).items() if value}
    if metadata:
        body["metadata"] = metadata
    if error is not None:
        body["error"] = error
    if sandbox is not None:
        body["sandbox"] = sandbox
    body["timestamp"] = (at or timezone.now()).isoformat()
    return body


def encode(body: dict[str, Any]) -> str:
    return json.dumps(body, cls=DjangoJSONEncoder, separators=(",", ":"))


def _send(groups: list[str], kind: str, data: str) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        for group in groups:
            async_to_sync(layer.group_send)(group, {"type": TEAM_EVENT, "event": kind, "data": data})
    except Exception:
        # The change is made and committed; its subscribers miss this one event.
        log.warning("could not publish an event to %s", ", ".join(groups), exc_info=True)


def publish(team_ids: Iterable[UUID | str], body: dict[str, Any]) -> None:
    """Send `body` to the streams of `team_ids` once the current transaction commits (at once
    outside one)."""
    groups = sorted({team_group(team_id) for team_id in team_ids})
    if not groups:
        return
    kind, data = body["event"], encode(body)
    transaction.on_commit(lambda: _send(groups, kind, data))


def _serialized(capsule: Sandbox) -> dict[str, Any]:
    # Here rather than at the top: the API's serializers import the models' app, and this module
    # is imported by capsules.actions, which the API imports in turn.
    from capsules.api.serializers import CapsuleSerializer

    data: dict[str, Any] = CapsuleSerializer(capsule).data
    return data


def capsule_event(
    kind: str,
    sandbox_id: str,
    *,
    actor: Actor | None = None,
    outcome: str | None = None,
    error: str | None = None,
    metadata: dict[str, str] | None = None,
) -> None:
    """Publish `kind` about the capsule as it is now to its team's streams."""
    capsule = Sandbox.objects.select_related("host").filter(pk=sandbox_id).first()
    if capsule is None:
        return
    body = event_body(
        kind,
        resource=(capsule.pk, "capsule"),
        actor=actor or SYSTEM,
        outcome=outcome,
        error=error,
        metadata=metadata,
        sandbox=_serialized(capsule),
    )
    publish([capsule.team_id], body)


def host_event(kind: str, host: Host) -> None:
    """Publish `kind` to the streams of every team with capsules on `host`. The host's address is
    the platform's own and stays out of the event; its id tells hosts apart."""
    teams = Sandbox.objects.filter(host=host, status__in=OCCUPYING).values_list("team_id", flat=True)
    body = event_body(kind, resource=(str(host.pk), "host"), actor=SYSTEM, metadata={"status": host.status})
    publish(set(teams), body)
