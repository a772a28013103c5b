"""Capsule endpoints: thin views over capsules.actions, scoped to the caller's team.

Another team's capsule answers 404 exactly like a missing one. Destroyed capsules
stay listed and readable with status `stopped`.
"""

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response

from capsules import actions
from capsules.api.base import TeamAPIView
from capsules.api.schema import error_responses
from capsules.api.serializers import (
    CapsuleCreateSerializer,
    CapsuleSerializer,
    NetworkPolicyRequestSerializer,
)
from capsules.models import Sandbox
from capsules.services import find_capsule

TAGS = ["capsules"]
# Statuses every call on a capsule may answer besides its own.
CAPSULE_ERRORS = error_responses(401, 404, 500)
AGENT_ERRORS = error_responses(409, 502, 503)


class CapsuleAPIView(TeamAPIView):
    serializer_class = CapsuleSerializer
    lookup_url_kwarg = "capsule_id"

    def get_queryset(self) -> QuerySet[Sandbox]:
        # The host for each capsule's `isolation`.
        return Sandbox.objects.filter(team=self.team).select_related("host").order_by("-created_at", "-pk")

    def get_object(self) -> Sandbox:
        capsule_id = self.kwargs[self.lookup_url_kwarg]
        sandbox = find_capsule(capsule_id, team_id=self.team.pk)
        if sandbox is None:
            raise NotFound(f"capsule {capsule_id} not found")
        return sandbox

    @property
    def audited(self) -> dict[str, Any]:
        """The audit trail's arguments of a lifecycle action: who asked and from where."""
        return {"audit_actor": self.audit_actor, "where": self.where}

    def respond(self, sandbox: Sandbox, http_status: int = status.HTTP_200_OK) -> Response:
        return Response(self.get_serializer(sandbox).data, status=http_status)


class CapsuleListView(CapsuleAPIView):
    """The team's capsules."""

    observer_readable = True

    @extend_schema(
        tags=TAGS,
        summary="List the team's capsules, newest first (stopped ones included)",
        responses={200: CapsuleSerializer(many=True), **error_responses(401, 500)},
    )
    def get(self, request: Request) -> Response:
        return Response(self.get_serializer(self.get_queryset(), many=True).data)

    @extend_schema(
        tags=TAGS,
        summary="Create a capsule",
        request=CapsuleCreateSerializer,
        responses={201: CapsuleSerializer, **error_responses(400, 401, 403, 409, 415, 500, 502, 503)},
    )
    def post(self, request: Request) -> Response:
        serializer = CapsuleCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        sandbox = actions.create_capsule(
            self.team,
            actor=self.actor,
            audit_actor=self.audit_actor,
            where=self.where,
            **serializer.validated_data,
        )
        return self.respond(sandbox, status.HTTP_201_CREATED)


class CapsuleDetailView(CapsuleAPIView):
    """One capsule of the team."""

    observer_readable = True

    @extend_schema(
        tags=TAGS,
        summary="Get a capsule (counts as activity)",
        responses={200: CapsuleSerializer, **CAPSULE_ERRORS},
    )
    def get(self, request: Request, capsule_id: str) -> Response:
        sandbox = self.get_object()
        actions.record_activity(sandbox.pk)
        sandbox.refresh_from_db()
        return self.respond(sandbox)

    @extend_schema(
        tags=TAGS,
        summary="Destroy a capsule; it stays listed as stopped",
        responses={204: None, **CAPSULE_ERRORS, **AGENT_ERRORS},
    )
    def delete(self, request: Request, capsule_id: str) -> Response:
        actions.destroy_capsule(self.get_object(), self.actor, **self.audited)
        return Response(status=status.HTTP_204_NO_CONTENT)


def _change_schema(summary: str, errors: dict[int, Any] = AGENT_ERRORS) -> Any:
    return extend_schema(
        tags=TAGS,
        summary=summary,
        request=None,
        responses={200: CapsuleSerializer, **CAPSULE_ERRORS, **errors},
    )


class CapsulePauseView(CapsuleAPIView):
    """Pausing freezes the capsule's processes; its terminals stay and carry on after resume."""

    @_change_schema("Pause a running capsule")
    def post(self, request: Request, capsule_id: str) -> Response:
        return self.respond(actions.pause_capsule(self.get_object(), self.actor, **self.audited))


class CapsuleResumeView(CapsuleAPIView):
    """Resuming lets a paused capsule's processes run again."""

    @_change_schema("Resume a paused capsule")
    def post(self, request: Request, capsule_id: str) -> Response:
        return self.respond(actions.resume_capsule(self.get_object(), self.actor, **self.audited))


class CapsulePingView(CapsuleAPIView):
    """A ping counts as activity, like any API call or terminal input and output."""

    @_change_schema("Record activity on a running capsule, postponing its idle pause", error_responses(409))
    def post(self, request: Request, capsule_id: str) -> Response:
        return self.respond(actions.ping_capsule(self.get_object()))


class CapsuleNetworkView(CapsuleAPIView):
    """The capsule's egress policy; a new one applies to new connections at once, without a restart."""

    @extend_schema(
        tags=TAGS,
        summary="Replace the network policy of a running or paused capsule",
        request=NetworkPolicyRequestSerializer,
        responses={200: CapsuleSerializer, **CAPSULE_ERRORS, **error_responses(400, 415), **AGENT_ERRORS},
    )
    def put(self, request: Request, capsule_id: str) -> Response:
        return self.respond(actions.set_network_policy(self.get_object(), request.data))
