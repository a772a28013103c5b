"""Request and response bodies. Requests check JSON types only; the rules live in capsules.actions."""

from typing import Any

from rest_framework import serializers

from capsules.api.fields import (
    StrictCharField,
    StrictIntegerField,
    StrictSerializer,
    StrictUUIDField,
    StringMapField,
)
from capsules.models import APIKey, Sandbox

# Capsules


class CapsuleSerializer(serializers.ModelSerializer[Sandbox]):
    metadata = serializers.DictField(child=serializers.CharField(), read_only=True)

    class Meta:
        model = Sandbox
        fields = [
            "id",
            "status",
            "template",
            "vcpus",
            "memory_mb",
            "timeout_sec",
            "created_at",
            "started_at",
            "last_active_at",
            "last_updated",
            "metadata",
            "disk_size_mb",
        ]
        read_only_fields = fields


class CapsuleCreateSerializer(StrictSerializer):
    """Every field is optional; null means the same as leaving it out (the default)."""

    template = StrictCharField(required=False, allow_null=True, help_text="Template to start from.")
    vcpus = StrictIntegerField(required=False, allow_null=True, help_text="Virtual CPUs (default 1).")
    memory_mb = StrictIntegerField(required=False, allow_null=True, help_text="Memory in MiB (default 512).")
    timeout_sec = StrictIntegerField(
        required=False,
        allow_null=True,
        help_text="Seconds without activity before the capsule is paused; 0 never pauses it, "
        "positive values below 60 are raised to 60 (default 300).",
    )
    metadata = StringMapField(
        required=False,
        allow_null=True,
        help_text="Labels set at creation: at most 20 keys matching [a-zA-Z0-9][a-zA-Z0-9._-]{0,63}, "
        "values of at most 64 characters; kernel_version, vmm_version, agent_version and "
        "envd_version are reserved.",
    )


# API keys


class APIKeySerializer(serializers.ModelSerializer[APIKey]):
    class Meta:
        model = APIKey
        fields = ["id", "name", "prefix", "created_at", "last_used"]
        read_only_fields = fields


class CreatedAPIKeySerializer(APIKeySerializer):
    key = serializers.SerializerMethodField(help_text="The raw key; shown in this response only.")

    class Meta(APIKeySerializer.Meta):
        fields = [*APIKeySerializer.Meta.fields, "key"]
        read_only_fields = fields

    def get_key(self, api_key: APIKey) -> str:
        raw_key: str = self.context["raw_key"]
        return raw_key


class APIKeyCreateSerializer(StrictSerializer):
    name = StrictCharField(max_length=200, help_text="What the key is for.")


# Authentication


class LoginSerializer(StrictSerializer):
    email = StrictCharField()
    password = StrictCharField(trim_whitespace=False)


class SwitchTeamSerializer(StrictSerializer):
    team_id = StrictUUIDField()


class UserSerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField(read_only=True)
    email = serializers.CharField(read_only=True)
    username = serializers.CharField(read_only=True)


class TokenPairSerializer(serializers.Serializer[Any]):
    access = serializers.CharField(read_only=True, help_text="Access token; send as Authorization: Bearer.")
    refresh = serializers.CharField(read_only=True, help_text="Refresh token for POST /v1/auth/refresh.")
    team_id = serializers.UUIDField(read_only=True, help_text="The team both tokens act for.")


class LoginResponseSerializer(TokenPairSerializer):
    user = UserSerializer(read_only=True)


class AccessTokenSerializer(serializers.Serializer[Any]):
    access = serializers.CharField(read_only=True)
    team_id = serializers.UUIDField(read_only=True)
