"""The OpenAPI document: security schemes, the error body of each status, and the hooks that shape it."""

from functools import cache
from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.plumbing import build_bearer_security_scheme_object
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema_field
from rest_framework import serializers

from capsules.api.authentication import API_KEY_HEADER
from capsules.api.errors import ERROR_CODES

HOST_TOKEN_SCHEME = "HostTokenAuth"  # noqa: S105 - a scheme name, not a secret
# Host agents authenticate with their own token inside the heartbeat view, so no
# authentication class is there for drf-spectacular to describe.
HOST_TOKEN_SECURITY = {"type": "http", "scheme": "bearer", "description": "A host agent's token, wrh_..."}

ERROR_DESCRIPTIONS = {
    400: "The request is malformed: bad JSON, a wrong type, an unknown field or a rejected value.",
    401: "Credentials are missing or refused.",
    403: (
        "The caller may not do this (forbidden: an API key of scope terminal:observe may only read "
        "capsules and terminal sessions), or a new capsule would pass a team quota (quota_exceeded)."
    ),
    404: "No such object for the caller's team (another team's objects answer the same).",
    409: "The capsule's status does not allow this now, or (files) the path already exists (conflict).",
    413: "An upload is larger than its limit (the message names it).",
    415: "The body is not application/json (multipart/form-data for uploads).",
    429: (
        "Too many sign-in attempts from this address or for this account, or too many token "
        "refreshes from this address; the Retry-After header says in how many seconds to try again."
    ),
    500: "An unexpected error; it has been logged.",
    502: "The host agent refused or failed the operation.",
    503: "No host can take the capsule, or its host is unreachable.",
    507: "The capsule's disk is full.",
}

# The response header of a 429 from the sign-in and refresh endpoints (capsules/ratelimit.py).
RETRY_AFTER = OpenApiParameter(
    "Retry-After",
    OpenApiTypes.INT,
    OpenApiParameter.HEADER,
    description="Seconds to wait before the next attempt.",
    response=[429],
)


class APIKeyScheme(OpenApiAuthenticationExtension):
    target_class = "capsules.api.authentication.APIKeyAuthentication"
    name = "ApiKeyAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {"type": "apiKey", "in": "header", "name": API_KEY_HEADER}


class BearerScheme(OpenApiAuthenticationExtension):
    target_class = "capsules.api.authentication.TeamJWTAuthentication"
    name = "BearerAuth"
    # Ahead of drf-spectacular's own extension for SimpleJWT's JWTAuthentication.
    priority = 1

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        definition: dict[str, str] = build_bearer_security_scheme_object(
            header_name="Authorization",
            token_prefix="Bearer",  # noqa: S106 - the scheme word, not a secret
            bearer_format="JWT",
        )
        return definition


@cache
def error_serializer(http_status: int) -> type[serializers.Serializer[Any]]:
    """`{"error": {"code", "message"}}` with the codes that status can carry, as component `Error<status>`."""
    code_field = extend_schema_field({"type": "string", "enum": list(ERROR_CODES[http_status])})(
        type(f"ErrorCode{http_status}Field", (serializers.CharField,), {})
    )
    detail = type(
        f"Error{http_status}DetailSerializer",
        (serializers.Serializer,),
        {"code": code_field(), "message": serializers.CharField(), "__module__": __name__},
    )
    return type(
        f"Error{http_status}Serializer",
        (serializers.Serializer,),
        {"error": detail(), "__module__": __name__},
    )


def error_responses(*statuses: int) -> dict[int, OpenApiResponse]:
    return {
        http_status: OpenApiResponse(
            error_serializer(http_status), description=ERROR_DESCRIPTIONS[http_status]
        )
        for http_status in statuses
    }


def only_v1_paths(endpoints: list[tuple[Any, ...]], **kwargs: Any) -> list[tuple[Any, ...]]:
    """Preprocessing hook: the API is mounted at /v1/ and /api/v1/; document it once, at /v1/."""
    return [endpoint for endpoint in endpoints if endpoint[0].startswith("/v1/")]


def close_objects(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """Postprocessing hook: components list every property, so extra ones are refused (requests)
    and never sent (responses)."""
    for schema in result.get("components", {}).get("schemas", {}).values():
        if schema.get("type") == "object" and "properties" in schema:
            schema.setdefault("additionalProperties", False)
    return result


def add_host_token_scheme(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """Postprocessing hook: the security scheme the heartbeat operation names."""
    result.setdefault("components", {}).setdefault("securitySchemes", {})[HOST_TOKEN_SCHEME] = (
        HOST_TOKEN_SECURITY
    )
    return result


EVENT_STREAM_PATH = "/v1/events/stream"
EVENT_KINDS = [
    "connected",
    "capsule.create",
    "capsule.pause",
    "capsule.resume",
    "capsule.destroy",
    "capsule.state.changed",
    "host.up",
    "host.down",
]
# One SSE message's `data:` line (the SDK's SSEEvent); the `event:` line repeats `event`.
SSE_EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["event", "timestamp"],
    "properties": {
        "event": {"type": "string", "enum": EVENT_KINDS},
        "outcome": {
            "type": "string",
            "enum": ["success", "error"],
            "description": "Capsule actions only (not state.changed, host or connected events).",
        },
        "resource": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"id": {"type": "string"}, "type": {"type": "string", "enum": ["capsule", "host"]}},
        },
        "actor": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "type": {"type": "string", "enum": ["user", "api_key", "system"]},
                "id": {"type": "string"},
                "name": {"type": "string"},
            },
        },
        "metadata": {
            "type": "object",
            "additionalProperties": {"type": "string"},
            "description": "reason (idle_timeout, host_failure, host_back), from and to for "
            "capsule.state.changed, status for host events.",
        },
        "error": {"type": "string", "description": "Why an action failed; only with outcome error."},
        "sandbox": {"$ref": "#/components/schemas/Capsule"},
        "timestamp": {"type": "string", "format": "date-time"},
    },
}


def add_event_stream(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """Postprocessing hook: the event stream, a plain async view that drf-spectacular does not see."""

    def error(http_status: int) -> dict[str, Any]:
        return {
            "description": ERROR_DESCRIPTIONS[http_status],
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/Error{http_status}"}}},
        }

    result.setdefault("components", {}).setdefault("schemas", {})["SSEEvent"] = SSE_EVENT_SCHEMA
    result.setdefault("paths", {})[EVENT_STREAM_PATH] = {
        "get": {
            "operationId": "events_stream_retrieve",
            "summary": "The team's lifecycle events as server-sent events, `connected` first",
            "description": "Each message is `event: <kind>` and `data: <SSEEvent JSON>`; lines starting "
            'with `:` are keepalive comments. See docs/api.md, "Events".',
            "tags": ["events"],
            "security": [{"ApiKeyAuth": []}, {"BearerAuth": []}],
            "responses": {
                "200": {
                    "description": "An endless stream of events.",
                    "content": {"text/event-stream": {"schema": {"$ref": "#/components/schemas/SSEEvent"}}},
                },
                "401": error(401),
                "403": error(403),
                "500": error(500),
            },
        }
    }
    return result


def add_scope_refusals(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """Postprocessing hook: every operation an API key may call can answer 403, since a key of
    scope `terminal:observe` is refused all but the reads of views that open them to it
    (`observer_readable`, capsules/api/authentication.py)."""
    generator = kwargs.get("generator")
    readable = {
        (path, method.lower())
        for path, _, method, callback in getattr(generator, "endpoints", None) or []
        if method == "GET" and getattr(getattr(callback, "cls", None), "observer_readable", False)
    }
    for path, operations in result.get("paths", {}).items():
        for method, operation in operations.items():
            if not isinstance(operation, dict) or {"ApiKeyAuth": []} not in operation.get("security", []):
                continue
            if (path, method) in readable:
                continue
            operation["responses"].setdefault(
                "403",
                {
                    "description": ERROR_DESCRIPTIONS[403],
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error403"}}},
                },
            )
    return result
