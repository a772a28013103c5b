"""Request and response bodies of the share-link API."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from capsules.api.fields import StrictCharField, StrictIntegerField, StrictSerializer

MIN_SECONDS = 60
PEER_REFUSED = (
    "share links are observer-only: a peer can type into the terminal, so it is never shared by "
    "link (add the person to the team instead)"
)
UNKNOWN_MODE = "must be 'observer'"


class ShareCreateSerializer(StrictSerializer):
    mode = StrictCharField(required=False, help_text="Only `observer` (the default).")
    expires_in = StrictIntegerField(
        required=False,
        min_value=MIN_SECONDS,
        help_text="Seconds the link works for (60 to WRENN_SHARE_LINK_MAX_SECONDS; default "
        "WRENN_SHARE_LINK_DEFAULT_SECONDS).",
        error_messages={"min_value": f"must be at least {MIN_SECONDS} seconds"},
    )

    def validate_mode(self, value: str) -> str:
        if value == "peer":
            raise serializers.ValidationError(PEER_REFUSED)
        if value != "observer":
            raise serializers.ValidationError(UNKNOWN_MODE)
        return value


class ShareSerializer(serializers.Serializer[Any]):
    id = serializers.CharField()
    tag = serializers.CharField()
    mode = serializers.CharField()
    status = serializers.ChoiceField(choices=["active", "expired", "revoked"])
    created_by = serializers.CharField()
    created_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField()
    revoked_at = serializers.DateTimeField(allow_null=True)


class CreatedShareSerializer(ShareSerializer):
    token = serializers.CharField(help_text="Shown once: only its hash is kept.")
    url = serializers.CharField(
        help_text="The terminal page that watches the session, without a login (the token is in it)."
    )
