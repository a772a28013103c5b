"""`POST /v1/hosts/recordings/{capsule}/{tag}/{seq}`: a host agent pushes a chunk of a recording.

Authenticated like the heartbeat, with the host's own token; a host may write the recordings of
its own capsules only. The body is the chunk (whole asciicast lines, `application/x-asciicast`);
the query says where it starts (`offset`: bytes of session output, `time`: seconds) and, on the
last chunk, `final=1&exit_code=N`. Answers: 200 stored (or already stored: a retry), 400 a
malformed chunk, 401 a bad token, 404 not this host's capsule, 409 recording turned off for the
team, 413 past the size cap (the agent stops sending).
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.parsers import BaseParser
from rest_framework.request import Request
from rest_framework.response import Response

from capsules.api.errors import ACTION_STATUS, error_response
from capsules.api.schema import HOST_TOKEN_SCHEME, error_responses
from capsules.hosts_api import BAD_TOKEN, HeartbeatView
from recordings.ingest import CHUNK_MAX_BYTES, ChunkIn, Refused, save

CAST_TYPE = "application/x-asciicast"


class CastParser(BaseParser):
    media_type = CAST_TYPE


class ChunkAnswerSerializer(serializers.Serializer[Any]):
    bytes = serializers.IntegerField(read_only=True, help_text="Bytes of the recording stored so far.")
    truncated = serializers.BooleanField(read_only=True)


def _number(request: Request, name: str, kind: type[int] | type[float], default: str | None = None) -> Any:
    raw = request.query_params.get(name, default)
    if raw is None:
        raise Refused("invalid_request", f"{name} is required")
    try:
        return kind(raw)
    except ValueError:
        raise Refused("invalid_request", f"{name} must be a number, got {raw[:32]!r}") from None


def chunk_of(request: Request, seq: int, body: bytes) -> ChunkIn:
    final = request.query_params.get("final", "0")
    if final not in ("0", "1"):
        raise Refused("invalid_request", "final must be 0 or 1")
    exit_code = _number(request, "exit_code", int, "0") if final == "1" else None
    if exit_code is not None and not -(2**31) <= exit_code < 2**31:
        raise Refused("invalid_request", "exit_code must be a 32-bit integer")
    return ChunkIn(
        seq=seq,
        data=body,
        offset=_number(request, "offset", int),
        time=_number(request, "time", float),
        final=final == "1",
        exit_code=exit_code,
    )


class RecordingChunkView(HeartbeatView):
    parser_classes = [CastParser]

    @extend_schema(
        tags=["hosts"],
        summary="A host agent pushes a chunk of a terminal recording (whole asciicast v2 lines)",
        request={CAST_TYPE: OpenApiTypes.BINARY},
        parameters=[
            OpenApiParameter(
                "offset", int, description="Session output (bytes) before the chunk's first event"
            ),
            OpenApiParameter("time", float, description="Seconds from the session's start to that event"),
            OpenApiParameter("final", int, required=False, description="1 on the session's last chunk"),
            OpenApiParameter("exit_code", int, required=False, description="The process's exit code (final)"),
        ],
        responses={
            200: OpenApiResponse(ChunkAnswerSerializer),
            **error_responses(400, 401, 404, 409, 413, 500),
        },
        auth=[{HOST_TOKEN_SCHEME: []}],  # type: ignore[list-item]
    )
    def post(self, request: Request, capsule_id: str, tag: str, seq: int) -> Response:  # type: ignore[override]
        host = self.authenticate_host(request)
        if host is None:
            return error_response(status.HTTP_401_UNAUTHORIZED, "unauthorized", BAD_TOKEN)
        # Read with a bound: Django refuses a body over DATA_UPLOAD_MAX_MEMORY_SIZE itself, and a
        # chunk is far smaller than that.
        body = request._request.read(CHUNK_MAX_BYTES + 1)
        try:
            recording = save(host, capsule_id, tag, chunk_of(request, seq, body))
        except Refused as refused:
            return error_response(ACTION_STATUS[refused.code], refused.code, refused.message)
        return Response({"bytes": recording.bytes, "truncated": recording.truncated})


chunk = RecordingChunkView.as_view()
