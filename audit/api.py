"""`GET /v1/audit`: the caller's team's own audit events, newest first, a page at a time.

Pages are walked with a cursor: each page's `next_cursor` is passed back as `cursor` for the next
one. Events are ordered by the order they were written (their id), newest first, and a page holds
only events older than its cursor, so a walk sees every event that existed when it began exactly
once, while events written meanwhile never push older ones onto a later page twice. Every filter
is checked: a bad value answers 400 naming the parameter and what it takes.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from django.db.models import QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from audit import trail
from audit.models import AuditEvent
from capsules.api.base import TeamAPIView
from capsules.api.schema import error_responses
from capsules.ids import SANDBOX_ID_MAX_LENGTH

TAGS = ["audit"]
DEFAULT_LIMIT = 50
MAX_LIMIT = 200
MAX_ACTOR = 200  # AuditEvent.actor_label's max_length
OUTCOMES = [outcome.value for outcome in AuditEvent.Outcome]
FILTERS = ("action", "outcome", "capsule_id", "actor", "since", "until")
PARAMETERS = (*FILTERS, "cursor", "limit")
_CURSOR_RE = re.compile(r"[1-9][0-9]{0,18}")
_COUNT_RE = re.compile(r"[0-9]{1,4}")


def _shown(value: str) -> str:
    return repr(value[:40])


def _moment(name: str, value: str) -> datetime:
    """An ISO 8601 date and time with its offset (`2026-12-04T20:30:00Z`)."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValidationError(
            f"{name} must be an ISO 8601 date and time such as 2026-12-04T20:30:00Z; got {_shown(value)}"
        ) from None
    if moment.tzinfo is None:
        raise ValidationError(
            f"{name} must name its time zone (Z or an offset such as +02:00); got {_shown(value)}"
        )
    return moment


def filtered(events: QuerySet[AuditEvent], params: dict[str, str]) -> QuerySet[AuditEvent]:
    """`events` narrowed by the query parameters, each checked; ValidationError on a bad one."""
    unknown = sorted(name for name in params if name not in PARAMETERS)
    if unknown:
        raise ValidationError(f"unknown query parameter {_shown(unknown[0])}: use {', '.join(PARAMETERS)}")
    action = params.get("action")
    if action is not None:
        if action not in trail.ACTIONS:
            raise ValidationError(f"action must be one of {', '.join(trail.ACTIONS)}; got {_shown(action)}")
        events = events.filter(action=action)
    outcome = params.get("outcome")
    if outcome is not None:
        if outcome not in OUTCOMES:
            raise ValidationError(f"outcome must be one of {', '.join(OUTCOMES)}; got {_shown(outcome)}")
        events = events.filter(outcome=outcome)
    capsule_id = params.get("capsule_id")
    if capsule_id is not None:
        if not capsule_id or len(capsule_id) > SANDBOX_ID_MAX_LENGTH:
            raise ValidationError(
                f"capsule_id must be a capsule id of 1 to {SANDBOX_ID_MAX_LENGTH} characters"
            )
        events = events.filter(capsule_id=capsule_id)
    actor = params.get("actor")
    if actor is not None:
        if not actor or len(actor) > MAX_ACTOR:
            raise ValidationError(
                "actor must be an actor's label (such as user:alice or key:wrn_ab12cd34) "
                f"of 1 to {MAX_ACTOR} characters"
            )
        events = events.filter(actor_label=actor)
    since = _moment("since", params["since"]) if "since" in params else None
    until = _moment("until", params["until"]) if "until" in params else None
    if since is not None and until is not None and since > until:
        raise ValidationError("since must not be after until")
    if since is not None:
        events = events.filter(at__gte=since)
    if until is not None:
        events = events.filter(at__lt=until)
    return events


def page_of(events: QuerySet[AuditEvent], params: dict[str, str]) -> tuple[list[AuditEvent], str | None]:
    """One page, newest first, after the cursor if any; and the next page's cursor (None: the last)."""
    limit = DEFAULT_LIMIT
    if "limit" in params:
        text = params["limit"]
        if not _COUNT_RE.fullmatch(text) or not 1 <= int(text) <= MAX_LIMIT:
            raise ValidationError(f"limit must be a whole number from 1 to {MAX_LIMIT}; got {_shown(text)}")
        limit = int(text)
    if "cursor" in params:
        cursor = params["cursor"]
        if not _CURSOR_RE.fullmatch(cursor):
            raise ValidationError("cursor must be the next_cursor of a previous page, unchanged")
        events = events.filter(pk__lt=int(cursor))
    rows = list(events.order_by("-pk")[: limit + 1])
    if len(rows) > limit:
        return rows[:limit], str(rows[limit - 1].pk)
    return rows, None


# Response bodies


class AuditActorSerializer(serializers.Serializer[Any]):
    type = serializers.ChoiceField(
        choices=[kind.value for kind in AuditEvent.ActorType],
        help_text="user, api_key, share (a share link), host, system (the control plane) or anonymous.",
    )
    # A field named like Field.label, which the stubs type as a string; DRF collects it all the same.
    label = serializers.CharField(  # type: ignore[assignment]
        help_text='How it is shown and filtered on (`actor`): "user:alice", "key:wrn_ab12cd34", "system", ...'
    )


class AuditEventSerializer(serializers.Serializer[Any]):
    """One event as the API shows it: empty texts are null; the serving worker is left out."""

    id = serializers.IntegerField()
    at = serializers.DateTimeField()
    action = serializers.ChoiceField(choices=list(trail.ACTIONS))
    outcome = serializers.ChoiceField(choices=OUTCOMES)
    reason = serializers.CharField(help_text="Why it failed (empty on success).")
    actor = AuditActorSerializer()
    capsule_id = serializers.CharField(allow_null=True)
    session_tag = serializers.CharField(
        allow_null=True, help_text="The terminal session (and its recording)."
    )
    client_address = serializers.IPAddressField(allow_null=True)
    origin = serializers.CharField(allow_null=True, help_text="The Origin header the request carried.")
    detail = serializers.DictField(help_text="What else the event keeps (a key's name and scope, ...).")

    def to_representation(self, instance: AuditEvent) -> dict[str, Any]:
        return {
            "id": instance.pk,
            "at": serializers.DateTimeField().to_representation(instance.at),
            "action": instance.action,
            "outcome": instance.outcome,
            "reason": instance.reason,
            "actor": {"type": instance.actor_type, "label": instance.actor_label},
            "capsule_id": instance.capsule_id or None,
            "session_tag": instance.session_tag or None,
            "client_address": instance.client_address,
            "origin": instance.origin or None,
            "detail": instance.detail,
        }


class AuditPageSerializer(serializers.Serializer[Any]):
    events = AuditEventSerializer(many=True)
    next_cursor = serializers.CharField(
        allow_null=True, help_text="Pass as `cursor` for the next (older) page; null on the last page."
    )


def _param(name: str, description: str, kind: Any = OpenApiTypes.STR, **kwargs: Any) -> OpenApiParameter:
    return OpenApiParameter(name, kind, OpenApiParameter.QUERY, description=description, **kwargs)


class AuditListView(TeamAPIView):
    """The team's own audit events; another team's never appear, whatever the filters."""

    def get_queryset(self) -> QuerySet[AuditEvent]:
        return AuditEvent.objects.filter(team=self.team)

    @extend_schema(
        tags=TAGS,
        summary="The team's audit events, newest first, a page at a time",
        parameters=[
            _param("action", "Only this action.", enum=list(trail.ACTIONS)),
            _param("outcome", "Only this outcome.", enum=OUTCOMES),
            _param("capsule_id", "Only events about this capsule."),
            _param("actor", 'Only events of this actor, by label ("user:alice", "key:wrn_ab12cd34").'),
            _param(
                "since",
                "Only events at or after this moment (ISO 8601 with a time zone).",
                OpenApiTypes.DATETIME,
            ),
            _param(
                "until", "Only events before this moment (ISO 8601 with a time zone).", OpenApiTypes.DATETIME
            ),
            _param("cursor", "The next_cursor of the previous page."),
            _param("limit", f"Events per page, 1 to {MAX_LIMIT}; default {DEFAULT_LIMIT}.", OpenApiTypes.INT),
        ],
        responses={200: AuditPageSerializer, **error_responses(400, 401, 403, 500)},
    )
    def get(self, request: Request) -> Response:
        params = {name: request.query_params.get(name, "") for name in request.query_params}
        events, next_cursor = page_of(filtered(self.get_queryset(), params), params)
        body = {"events": [AuditEventSerializer(event).data for event in events], "next_cursor": next_cursor}
        return Response(body)
