"""The host agents' heartbeat endpoint as the OpenAPI document describes it; capsules.hosts_api serves it."""

from typing import Any

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from capsules.api.schema import HOST_TOKEN_SCHEME, error_responses
from capsules.hosts_api import HeartbeatView

_COUNT = {"type": "integer", "minimum": 0}
# Inline rather than a serializer: the agent may send more than this, and what is here is
# checked by capsules.hosts.parse_heartbeat.
HEARTBEAT_REQUEST: dict[str, Any] = {
    "type": "object",
    "properties": {
        "address": {"type": "string", "description": "host:port of the agent's gRPC server"},
        "runtime": {"type": "string", "maxLength": 32},
        "version": {"type": "string", "maxLength": 64},
        "capacity": {"type": "object", "properties": {"vcpus": _COUNT, "memory_mb": _COUNT}},
        "vcpus": _COUNT,
        "memory_mb": _COUNT,
        "sandboxes": {
            "type": "array",
            "description": "When present, the whole truth about which capsules exist on the host.",
            "items": {
                "type": "object",
                "required": ["id"],
                "properties": {
                    "id": {"type": "string", "maxLength": 64},
                    "state": {"type": "string", "maxLength": 16},
                    "pty_sessions": _COUNT,
                    "oom_kills": {
                        **_COUNT,
                        "description": "Processes the out-of-memory killer ended since the capsule was "
                        "created; ignored when not a count.",
                    },
                },
            },
        },
        "isolation": {
            "type": "object",
            "description": "Which parts of isolation the host gives (network, limits, seccomp, …), "
            "each on or off with the reason; kept until the next report.",
            "maxProperties": 16,
            "additionalProperties": {
                "type": "object",
                "required": ["on"],
                "properties": {"on": {"type": "boolean"}, "reason": {"type": "string", "maxLength": 500}},
            },
        },
    },
}


class HeartbeatResponseSerializer(serializers.Serializer[Any]):
    host_id = serializers.CharField(read_only=True)
    interval = serializers.IntegerField(read_only=True, help_text="Seconds until the next heartbeat.")


class DocumentedHeartbeatView(HeartbeatView):
    """Authenticated with the host's own token (`Authorization: Bearer wrh_...`), not a user's."""

    @extend_schema(
        tags=["hosts"],
        summary="A host agent reports that it is alive, what it can hold and which capsules it has",
        request={"application/json": HEARTBEAT_REQUEST},
        responses={
            200: OpenApiResponse(HeartbeatResponseSerializer),
            # The view answers 400, not 415, for a body that is not JSON.
            **error_responses(400, 401, 500),
        },
        # Security requirement objects; the stubs say names, drf-spectacular takes these as they are.
        auth=[{HOST_TOKEN_SCHEME: []}],  # type: ignore[list-item]
    )
    def post(self, request: Request) -> Response:
        return super().post(request)
