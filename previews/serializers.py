"""Request and response bodies of the preview API."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from capsules.api.fields import StrictBooleanField, StrictIntegerField, StrictSerializer
from previews.hosts import MAX_PORT

PORT_RANGE = f"must be between 1 and {MAX_PORT}"


class LinkCreateSerializer(StrictSerializer):
    port = StrictIntegerField(
        min_value=1,
        max_value=MAX_PORT,
        error_messages={
            "min_value": f"must be between 1 and {MAX_PORT}",
            "max_value": f"must be between 1 and {MAX_PORT}",
        },
    )
    expires_in = StrictIntegerField(
        required=False,
        min_value=60,
        help_text="Seconds the link works for (60 to WRENN_PREVIEW_LINK_MAX_SECONDS; default "
        "WRENN_PREVIEW_LINK_DEFAULT_SECONDS).",
        error_messages={"min_value": "must be at least 60 seconds"},
    )


class LinkSerializer(serializers.Serializer[Any]):
    id = serializers.CharField()
    port = serializers.IntegerField()
    url = serializers.CharField(help_text="The preview's address; the link's token is not in it.")
    status = serializers.ChoiceField(choices=["active", "expired", "revoked"])
    created_by = serializers.CharField()
    created_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField()
    revoked_at = serializers.DateTimeField(allow_null=True)


class CreatedLinkSerializer(LinkSerializer):
    token = serializers.CharField(help_text="Shown once: only its hash is kept.")
    url = serializers.CharField(
        help_text="The preview's address with the token, to open once: the token becomes a cookie "
        "of the preview host and the browser is sent on without it."
    )


class PublicPortRequestSerializer(StrictSerializer):
    public = StrictBooleanField()


class PortSerializer(serializers.Serializer[Any]):
    port = serializers.IntegerField()
    public = serializers.BooleanField()
    url = serializers.CharField()
