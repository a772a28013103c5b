"""API key endpoints: create (the raw key is shown once, with its scope), list the live ones, revoke.

Revoked keys are left out of the list; revoking one again, or another team's key, answers 404.
"""

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response

from capsules.api.base import TeamAPIView
from capsules.api.schema import error_responses
from capsules.api.serializers import APIKeyCreateSerializer, APIKeySerializer, CreatedAPIKeySerializer
from capsules.keys import create_api_key, revoke_api_keys
from capsules.models import APIKey

TAGS = ["api-keys"]


class APIKeyAPIView(TeamAPIView):
    serializer_class = APIKeySerializer

    def get_queryset(self) -> QuerySet[APIKey]:
        return APIKey.objects.filter(team=self.team, revoked_at__isnull=True).order_by("-created_at", "-pk")


class APIKeyListView(APIKeyAPIView):
    """Only the key's display prefix is kept; the raw key cannot be shown again."""

    @extend_schema(
        tags=TAGS,
        summary="List the team's live API keys, newest first (never the key itself)",
        responses={200: APIKeySerializer(many=True), **error_responses(401, 500)},
    )
    def get(self, request: Request) -> Response:
        return Response(self.get_serializer(self.get_queryset(), many=True).data)

    @extend_schema(
        tags=TAGS,
        summary="Create an API key for the team; the response is the only place the key appears",
        request=APIKeyCreateSerializer,
        responses={201: CreatedAPIKeySerializer, **error_responses(400, 401, 415, 500)},
    )
    def post(self, request: Request) -> Response:
        serializer = APIKeyCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        api_key, raw_key = create_api_key(
            self.team,
            data["name"],
            created_by=self.person,
            scope=data["scope"],
            audit_actor=self.audit_actor,
            where=self.where,
        )
        body = CreatedAPIKeySerializer(api_key, context={"raw_key": raw_key}).data
        return Response(body, status=status.HTTP_201_CREATED)


class APIKeyDetailView(APIKeyAPIView):
    """A revoked key is refused from then on and left out of the list."""

    @extend_schema(
        tags=TAGS,
        summary="Revoke an API key",
        parameters=[OpenApiParameter("key_id", int, OpenApiParameter.PATH)],
        responses={204: None, **error_responses(401, 404, 500)},
    )
    def delete(self, request: Request, key_id: int) -> Response:
        keys = self.get_queryset().filter(pk=key_id)
        if not revoke_api_keys(keys, audit_actor=self.audit_actor, where=self.where):
            raise NotFound(f"API key {key_id} not found")
        return Response(status=status.HTTP_204_NO_CONTENT)
