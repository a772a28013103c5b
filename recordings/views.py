"""Playback API: a capsule's recordings, one as a `.cast` (asciicast v2), one as plain text.

`GET /v1/capsules/{id}/recordings`, `…/recordings/{tag}` and `…/recordings/{tag}/text`. They take
the team credentials every endpoint takes (API key, access token) and also the signed-in
person's session cookie (a member of the capsule's team, or staff), because the pages link to
them directly. Another team's capsule answers like a missing one. Bodies are streamed from the
recordings storage a piece at a time (paced by the client under daphne, wrenn/transfers.py),
and a recording still being written is served as it stands: a live session plays from its start.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any, NoReturn

from django.conf import settings
from django.http import StreamingHttpResponse
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.authentication import SessionAuthentication
from rest_framework.exceptions import NotAuthenticated, NotFound, ParseError, PermissionDenied
from rest_framework.generics import GenericAPIView
from rest_framework.permissions import BasePermission
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from capsules.api.authentication import (
    APIKeyAuthentication,
    ScopeAllows,
    TeamContext,
    TeamJWTAuthentication,
)
from capsules.api.errors import api_exception_handler
from capsules.api.schema import error_responses
from capsules.models import Sandbox
from capsules.services import find_capsule
from protos import rules
from recordings import store
from recordings.access import can_view_any
from recordings.models import Recording
from recordings.text import aplain_text
from wrenn.transfers import ResponseWindow, window_of

log = logging.getLogger(__name__)

TAGS = ["recordings"]
CAST_TYPE = "application/x-asciicast"
MISSING_CREDENTIALS = "missing credentials: send X-API-Key, Authorization: Bearer, or sign in"
ERRORS = error_responses(400, 401, 404, 500)


class SessionMemberAuthentication(SessionAuthentication):
    """The signed-in person's session cookie (the pages' links); which capsules they reach is the
    view's check (a member of the capsule's team, or staff)."""

    def authenticate(self, request: Request) -> tuple[Any, None] | None:
        found = super().authenticate(request)
        if found is None or not found[0].is_active:
            return None
        return found[0], None


class SessionCookieScheme(OpenApiAuthenticationExtension):
    target_class = "recordings.views.SessionMemberAuthentication"
    name = "SessionCookieAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {"type": "apiKey", "in": "cookie", "name": settings.SESSION_COOKIE_NAME}


class IsTeamCallerOrPerson(BasePermission):
    def has_permission(self, request: Request, view: Any) -> bool:
        if isinstance(request.auth, TeamContext):
            return True
        return bool(request.user and request.user.is_authenticated and request.user.pk is not None)


class RecordingSerializer(serializers.ModelSerializer[Recording]):
    class Meta:
        model = Recording
        fields = [
            "tag",
            "command",
            "started_by",
            "started_at",
            "ended_at",
            "exit_code",
            "bytes",
            "duration",
            "truncated",
            "input_recorded",
        ]
        extra_kwargs = {
            "bytes": {"help_text": "Size of the .cast stored so far."},
            "duration": {"help_text": "Seconds from the session's start to its last recorded event."},
            "truncated": {"help_text": "The size cap was reached: nothing after that point was kept."},
            "input_recorded": {"help_text": "Whether `i` (input) events are in it (the team's choice)."},
        }


class RecordingAPIView(GenericAPIView[Any]):
    authentication_classes = [APIKeyAuthentication, TeamJWTAuthentication, SessionMemberAuthentication]
    # An observe-only key (scope terminal:observe) is refused: it watches live terminals, and a
    # recording may hold what was typed (when the team records input).
    permission_classes = [IsTeamCallerOrPerson, ScopeAllows]
    renderer_classes = [JSONRenderer]
    serializer_class = RecordingSerializer

    def get_exception_handler(self) -> Any:
        return api_exception_handler

    def permission_denied(
        self, request: Request, message: str | None = None, code: str | None = None
    ) -> NoReturn:
        if request.successful_authenticator is None:
            raise NotAuthenticated(MISSING_CREDENTIALS)
        raise PermissionDenied(message)

    def capsule(self, capsule_id: str) -> Sandbox:
        if isinstance(self.request.auth, TeamContext):
            sandbox = find_capsule(capsule_id, team_id=self.request.auth.team.pk)
        else:
            user = self.request.user
            sandbox = find_capsule(capsule_id, user=user)
            if sandbox is None and can_view_any(user):
                sandbox = find_capsule(capsule_id, any_team=True)
        if sandbox is None:
            raise NotFound(f"capsule {capsule_id[:64]} not found")
        return sandbox

    def recording(self, capsule_id: str, tag: str) -> Recording:
        sandbox = self.capsule(capsule_id)
        if not rules.is_tag(tag):
            raise ParseError(rules.bad_tag(tag))
        recording = Recording.objects.filter(sandbox=sandbox, tag=tag).first()
        if recording is None:
            raise NotFound(f"capsule {capsule_id} has no recording of terminal session {tag}")
        return recording

    def stream(self, recording: Recording, text: bool) -> StreamingHttpResponse:
        names = store.chunk_names(recording)
        body = _paced(store.aread_files(names), window_of(getattr(self.request, "scope", {})))
        if text:
            response = StreamingHttpResponse(aplain_text(body), content_type="text/plain; charset=utf-8")
        else:
            response = StreamingHttpResponse(body, content_type=CAST_TYPE)
            response["Content-Disposition"] = (
                f'attachment; filename="{recording.sandbox_id}-{recording.tag}.cast"'
            )
        # Where the recording stands: a live session's grows with every chunk.
        response["X-Wrenn-Recording-Complete"] = "true" if recording.ended_at else "false"
        return response


class RecordingListView(RecordingAPIView):
    @extend_schema(
        tags=TAGS,
        summary="The capsule's terminal recordings, newest first",
        responses={200: RecordingSerializer(many=True), **error_responses(401, 404, 500)},
    )
    def get(self, request: Request, capsule_id: str) -> Response:
        sandbox = self.capsule(capsule_id)
        recordings = Recording.objects.filter(sandbox=sandbox).order_by("-started_at", "-pk")
        return Response(self.get_serializer(recordings, many=True).data)


class RecordingCastView(RecordingAPIView):
    @extend_schema(
        tags=TAGS,
        summary="A recording as asciicast v2 (application/x-asciicast), streamed; a live one as it stands",
        responses={(200, CAST_TYPE): OpenApiResponse(bytes), **ERRORS},
    )
    def get(self, request: Request, capsule_id: str, tag: str) -> StreamingHttpResponse:
        return self.stream(self.recording(capsule_id, tag), text=False)


class RecordingTextView(RecordingAPIView):
    @extend_schema(
        tags=TAGS,
        summary="A recording's output as plain text, escape sequences removed, streamed",
        responses={(200, "text/plain"): OpenApiResponse(str), **ERRORS},
    )
    def get(self, request: Request, capsule_id: str, tag: str) -> StreamingHttpResponse:
        return self.stream(self.recording(capsule_id, tag), text=True)


async def _paced(pieces: AsyncIterator[bytes], window: ResponseWindow | None) -> AsyncIterator[bytes]:
    """The pieces, each once the client has taken the previous ones (under daphne)."""
    try:
        async for piece in pieces:
            if window is not None:
                await window.wait()
            yield piece
    except asyncio.CancelledError:
        raise
    except Exception:
        # The response has begun: all that can be done is to end it short, and say why in the log.
        log.exception("reading a recording failed mid-stream")
    finally:
        if window is not None:
            window.release()
