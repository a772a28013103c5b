"""The share-link API under /v1/capsules/{id}/pty/{tag}/shares: issue, list and revoke.

Scoped to the caller's team like every capsule endpoint (another team's capsule answers 404 like
a missing one). A link is issued for a live session only, and grants that session alone.
"""

from __future__ import annotations

from typing import Any

from django.urls import reverse
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from capsules.api.base import TeamAPIView
from capsules.api.schema import error_responses
from capsules.models import Sandbox, TerminalSession
from capsules.services import find_capsule
from protos import rules
from pty.roster import announce_revoked
from shares import links
from shares.models import ShareLink
from shares.serializers import CreatedShareSerializer, ShareCreateSerializer, ShareSerializer

TAGS = ["shares"]
ERRORS = error_responses(401, 404, 500)


class ShareAPIView(TeamAPIView):
    def capsule(self) -> Sandbox:
        capsule_id = self.kwargs["capsule_id"]
        sandbox = find_capsule(capsule_id, team_id=self.team.pk)
        if sandbox is None:
            raise NotFound(f"capsule {capsule_id[:64]} not found")
        return sandbox

    def tag(self) -> str:
        tag = self.kwargs["tag"]
        if not rules.is_tag(tag):
            raise NotFound(f"terminal session {tag[:64]} not found")
        return tag

    def data(self, link: ShareLink) -> dict[str, Any]:
        return {
            "id": link.pk,
            "tag": link.tag,
            "mode": link.mode,
            "status": links.status(link),
            "created_by": link.created_by,
            "created_at": link.created_at,
            "expires_at": link.expires_at,
            "revoked_at": link.revoked_at,
        }


class ShareListView(ShareAPIView):
    """Links that let anyone watch one terminal session, read-only, until they expire or are revoked."""

    @extend_schema(
        tags=TAGS,
        summary="List a terminal session's share links, newest first (never their tokens)",
        responses={200: ShareSerializer(many=True), **ERRORS},
    )
    def get(self, request: Request, capsule_id: str, tag: str) -> Response:
        rows = ShareLink.objects.filter(sandbox=self.capsule(), tag=self.tag())
        return Response(ShareSerializer([self.data(link) for link in rows], many=True).data)

    @extend_schema(
        tags=TAGS,
        summary="Issue a signed, expiring, read-only link into a live terminal session (token shown once)",
        request=ShareCreateSerializer,
        responses={201: CreatedShareSerializer, **ERRORS, **error_responses(400, 403, 415)},
    )
    def post(self, request: Request, capsule_id: str, tag: str) -> Response:
        sandbox, tag = self.capsule(), self.tag()
        body = ShareCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        longest = links.max_seconds()
        expires_in = body.validated_data.get("expires_in", links.default_seconds())
        if expires_in > longest:
            raise ValidationError({"expires_in": [f"must be at most {longest} seconds"]})
        if not TerminalSession.objects.filter(sandbox=sandbox, tag=tag, ended_at__isnull=True).exists():
            raise NotFound(f"terminal session {tag} not found (or it has ended)")
        issued = links.issue(sandbox, tag, expires_in, self.audit_actor, self.where)
        data = self.data(issued.link)
        data["token"] = issued.token
        data["url"] = request.build_absolute_uri(reverse("shared-terminal", args=[issued.token]))
        return Response(CreatedShareSerializer(data).data, status=status.HTTP_201_CREATED)


class ShareDetailView(ShareAPIView):
    @extend_schema(
        tags=TAGS,
        summary="Revoke a share link: it stops working at once, and its open viewers are closed",
        responses={204: None, **ERRORS, **error_responses(403)},
    )
    def delete(self, request: Request, capsule_id: str, tag: str, share_id: str) -> Response:
        sandbox, tag = self.capsule(), self.tag()
        link = (
            ShareLink.objects.select_related("sandbox").filter(sandbox=sandbox, tag=tag, pk=share_id).first()
        )
        if link is None:
            raise NotFound(f"share link {share_id[:40]} not found for session {tag}")
        if links.revoke(link, self.audit_actor, self.where):
            announce_revoked(sandbox.pk, tag, link.pk)
        return Response(status=status.HTTP_204_NO_CONTENT)
