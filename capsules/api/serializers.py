"""Request and response bodies. Requests check JSON types only; the rules live in capsules.actions."""

from datetime import datetime
from typing import Any

from drf_spectacular.utils import extend_schema_field, extend_schema_serializer
from rest_framework import serializers

from capsules.api.fields import (
    StrictCharField,
    StrictIntegerField,
    StrictSerializer,
    StrictUUIDField,
    StringMapField,
)
from capsules.events import EVENTS_KEPT
from capsules.models import APIKey, Sandbox
from capsules.network import MAX_ENTRIES

# Capsules

_CIDRS = f"At most {MAX_ENTRIES} IPv4 or IPv6 CIDRs, such as 203.0.113.0/24 or 2001:db8::/32."
ALLOW_INTERNET_HELP = "Public addresses (everything outside the private ranges); default true."
ALLOW_OUT_HELP = f"Networks the capsule may reach even inside a blocked range or deny_out. {_CIDRS}"
DENY_OUT_HELP = f"Networks the capsule may not reach even with allow_internet. {_CIDRS}"


class NetworkPolicySerializer(serializers.Serializer[Any]):
    """Where the capsule may connect to; allow_out wins over deny_out (docs/api.md, "Network policy")."""

    allow_internet = serializers.BooleanField(read_only=True, help_text=ALLOW_INTERNET_HELP)
    allow_out = serializers.ListField(child=serializers.CharField(), read_only=True, help_text=ALLOW_OUT_HELP)
    deny_out = serializers.ListField(child=serializers.CharField(), read_only=True, help_text=DENY_OUT_HELP)


# Documentation only: capsules.network checks a policy, with messages that name the key and the entry.
@extend_schema_serializer(component_name="NetworkPolicy")
class NetworkPolicyRequestSerializer(serializers.Serializer[Any]):
    """Where the capsule may connect to; a key left out takes its default, allow_out wins over deny_out."""

    allow_internet = serializers.BooleanField(required=False, help_text=ALLOW_INTERNET_HELP)
    allow_out = serializers.ListField(
        child=serializers.CharField(), required=False, max_length=MAX_ENTRIES, help_text=ALLOW_OUT_HELP
    )
    deny_out = serializers.ListField(
        child=serializers.CharField(), required=False, max_length=MAX_ENTRIES, help_text=DENY_OUT_HELP
    )


@extend_schema_field(NetworkPolicyRequestSerializer)
class NetworkPolicyField(serializers.DictField):
    """A network policy in a request: a JSON object, whose keys and entries capsules.network checks."""

    default_error_messages = {"null": "must not be null", "not_a_dict": "must be an object"}


class StoredTimeField(serializers.DateTimeField):
    """A time kept in a JSON column as ISO 8601 text, answered like every other time."""

    def to_representation(self, value: Any) -> Any:
        return super().to_representation(datetime.fromisoformat(value) if isinstance(value, str) else value)


class CapsuleEventSerializer(serializers.Serializer[Any]):
    at = StoredTimeField(read_only=True)
    kind = serializers.CharField(
        read_only=True, help_text="oom_kill: the out-of-memory killer ended processes."
    )
    message = serializers.CharField(read_only=True)


class IsolationPartSerializer(serializers.Serializer[Any]):
    on = serializers.BooleanField(read_only=True)
    reason = serializers.CharField(read_only=True, help_text="Why the part is off (or how it is provided).")


class CapsuleSerializer(serializers.ModelSerializer[Sandbox]):
    metadata = serializers.DictField(child=serializers.CharField(), read_only=True)
    network = NetworkPolicySerializer(read_only=True)
    events = CapsuleEventSerializer(
        many=True,
        read_only=True,
        help_text=f"What happened to the capsule, oldest first (the last {EVENTS_KEPT}).",
    )
    isolation = serializers.DictField(
        child=IsolationPartSerializer(),
        source="host.isolation",
        read_only=True,
        allow_null=True,
        help_text="What isolation the capsule's host gives (network, limits, seccomp, …), as it last "
        "reported; null when it has not.",
    )

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
            "network",
            "events",
            "isolation",
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
    network = NetworkPolicyField(
        required=False,
        allow_null=True,
        help_text="Where the capsule may connect to; default: the internet, nothing private.",
    )


# API keys


SCOPES = [scope.value for scope in APIKey.Scope]
SCOPE_HELP = (
    '"full" (the default): everything the team may do; "terminal:observe": only list and read '
    'capsules and watch their terminals as an observer (docs/api.md, "API key scopes").'
)


class APIKeySerializer(serializers.ModelSerializer[APIKey]):
    scope = serializers.ChoiceField(choices=SCOPES, read_only=True, help_text=SCOPE_HELP)

    class Meta:
        model = APIKey
        fields = ["id", "name", "prefix", "scope", "created_at", "last_used"]
        read_only_fields = fields


class CreatedAPIKeySerializer(APIKeySerializer):
    key = serializers.SerializerMethodField(help_text="The raw key; shown in this response only.")

    class Meta(APIKeySerializer.Meta):
        fields = [*APIKeySerializer.Meta.fields, "key"]
        read_only_fields = fields

    def get_key(self, api_key: APIKey) -> str:
        raw_key: str = self.context["raw_key"]
        return raw_key


class ScopeField(serializers.ChoiceField):
    default_error_messages = {
        "invalid_choice": f"{{input!r}} is not a scope: use one of {', '.join(map(repr, SCOPES))}",
        "null": f"null is not a scope: use one of {', '.join(map(repr, SCOPES))}",
    }

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, str):
            self.fail("invalid_choice", input=data)
        return super().to_internal_value(data)


class APIKeyCreateSerializer(StrictSerializer):
    name = StrictCharField(max_length=200, help_text="What the key is for.")
    scope = ScopeField(choices=SCOPES, default=APIKey.Scope.FULL.value, help_text=SCOPE_HELP)


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
