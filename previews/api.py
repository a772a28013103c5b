"""The preview API under /v1/capsules/{id}/previews: links (issue, list, revoke) and public ports.

Thin views over previews.links, scoped to the caller's team the way every capsule endpoint is:
another team's capsule answers 404 like a missing one.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from capsules.api.base import TeamAPIView
from capsules.api.schema import error_responses
from capsules.models import Sandbox
from capsules.services import find_capsule
from previews import links
from previews.hosts import MAX_PORT, parse_port, preview_url
from previews.models import PreviewLink, PublicPort
from previews.serializers import (
    CreatedLinkSerializer,
    LinkCreateSerializer,
    LinkSerializer,
    PortSerializer,
    PublicPortRequestSerializer,
)

TAGS = ["previews"]
ERRORS = error_responses(401, 404, 500)


class PreviewAPIView(TeamAPIView):
    def capsule(self) -> Sandbox:
        capsule_id = self.kwargs["capsule_id"]
        sandbox = find_capsule(capsule_id, team_id=self.team.pk)
        if sandbox is None:
            raise NotFound(f"capsule {capsule_id} not found")
        return sandbox

    def caller_label(self) -> str:
        if self.caller.api_key is not None:
            return f"key:{self.caller.api_key.prefix}"
        return f"user:{self.request.user.get_username()}"

    def url(self, sandbox_id: str, port: int) -> str:
        request = self.request
        scheme = "https" if request.is_secure() else "http"
        return preview_url(port, sandbox_id, scheme, request.get_host())

    def link_data(self, link: PreviewLink) -> dict[str, Any]:
        return {
            "id": link.pk,
            "port": link.port,
            "url": self.url(link.sandbox_id, link.port),
            "status": links.link_status(link),
            "created_by": link.created_by,
            "created_at": link.created_at,
            "expires_at": link.expires_at,
            "revoked_at": link.revoked_at,
        }

    def port(self) -> int:
        text = self.kwargs["port"]
        port = parse_port(text)
        if port is None:
            raise ValidationError(
                {
                    "port": [
                        f"{text[:12]!r} is not a port: write 1 to {MAX_PORT} in digits, with no leading zero"
                    ]
                }
            )
        return port


class LinkListView(PreviewAPIView):
    """Links into a port of the capsule that work without the team's credentials, until they
    expire or are revoked."""

    @extend_schema(
        tags=TAGS,
        summary="List the capsule's preview links, newest first (never their tokens)",
        responses={200: LinkSerializer(many=True), **ERRORS},
    )
    def get(self, request: Request, capsule_id: str) -> Response:
        rows = PreviewLink.objects.filter(sandbox=self.capsule())
        return Response(LinkSerializer([self.link_data(link) for link in rows], many=True).data)

    @extend_schema(
        tags=TAGS,
        summary="Issue a signed, expiring link into a port of the capsule (the token is shown once)",
        request=LinkCreateSerializer,
        responses={201: CreatedLinkSerializer, **ERRORS, **error_responses(400, 415)},
    )
    def post(self, request: Request, capsule_id: str) -> Response:
        sandbox = self.capsule()
        body = LinkCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        longest = links.max_link_seconds()
        expires_in = body.validated_data.get(
            "expires_in", min(settings.WRENN_PREVIEW_LINK_DEFAULT_SECONDS, longest)
        )
        if expires_in > longest:
            raise ValidationError({"expires_in": [f"must be at most {longest} seconds"]})
        issued = links.issue_link(sandbox, body.validated_data["port"], expires_in, self.caller_label())
        data = self.link_data(issued.link)
        data["token"] = issued.token
        data["url"] += f"?wrenn_preview_token={issued.token}"
        return Response(CreatedLinkSerializer(data).data, status=status.HTTP_201_CREATED)


class LinkDetailView(PreviewAPIView):
    @extend_schema(
        tags=TAGS,
        summary="Revoke a preview link: it stops working at once, open WebSockets within seconds",
        responses={204: None, **ERRORS},
    )
    def delete(self, request: Request, capsule_id: str, link_id: str) -> Response:
        link = PreviewLink.objects.filter(sandbox=self.capsule(), pk=link_id).first()
        if link is None:
            raise NotFound(f"preview link {link_id[:40]} not found")
        links.revoke_link(link)
        return Response(status=status.HTTP_204_NO_CONTENT)


class PortListView(PreviewAPIView):
    @extend_schema(
        tags=TAGS,
        summary="List the capsule's public ports",
        responses={200: PortSerializer(many=True), **ERRORS},
    )
    def get(self, request: Request, capsule_id: str) -> Response:
        rows = PublicPort.objects.filter(sandbox=self.capsule())
        data = [{"port": row.port, "public": True, "url": self.url(row.sandbox_id, row.port)} for row in rows]
        return Response(PortSerializer(data, many=True).data)


class PortDetailView(PreviewAPIView):
    """A public port's preview answers anyone, without credentials; private is the default."""

    def respond(self, sandbox: Sandbox, port: int, public: bool) -> Response:
        return Response(
            PortSerializer({"port": port, "public": public, "url": self.url(sandbox.pk, port)}).data
        )

    @extend_schema(
        tags=TAGS,
        summary="Make a port of the capsule public (true) or private again (false)",
        request=PublicPortRequestSerializer,
        responses={200: PortSerializer, **ERRORS, **error_responses(400, 415)},
    )
    def put(self, request: Request, capsule_id: str, port: str) -> Response:
        sandbox, number = self.capsule(), self.port()
        body = PublicPortRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        public = links.set_public(sandbox, number, body.validated_data["public"], self.caller_label())
        return self.respond(sandbox, number, public)

    @extend_schema(
        tags=TAGS,
        summary="Make a port of the capsule private again (its preview needs credentials)",
        responses={204: None, **ERRORS, **error_responses(400)},
    )
    def delete(self, request: Request, capsule_id: str, port: str) -> Response:
        sandbox, number = self.capsule(), self.port()
        links.set_public(sandbox, number, False, self.caller_label())
        return Response(status=status.HTTP_204_NO_CONTENT)
