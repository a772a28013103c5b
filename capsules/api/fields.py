"""Request fields that take JSON values as they are: no "2" for an integer, no 2 for a string.

Messages are short phrases, so that a flattened error reads "vcpus: must be an integer".
"""

from collections.abc import Mapping
from typing import Any

from rest_framework import serializers
from rest_framework.fields import empty
from rest_framework.settings import api_settings

COMMON_MESSAGES = {
    "required": "is required",
    "null": "must not be null",
}


class StrictCharField(serializers.CharField):
    default_error_messages = {
        **COMMON_MESSAGES,
        "invalid": "must be a string",
        "blank": "must not be empty",
        "max_length": "must be at most {max_length} characters",
    }

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictIntegerField(serializers.IntegerField):
    default_error_messages = {**COMMON_MESSAGES, "invalid": "must be an integer"}

    def to_internal_value(self, data: Any) -> int:
        # bool is an int subclass, but `true` is never a count.
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return int(data)


class StrictBooleanField(serializers.BooleanField):
    default_error_messages = {"required": COMMON_MESSAGES["required"], "invalid": "must be true or false"}

    def to_internal_value(self, data: Any) -> bool:
        # DRF takes "yes", 1 and "true" for true; a JSON boolean is the only one here.
        if not isinstance(data, bool):
            self.fail("invalid")
        return data


class StrictUUIDField(serializers.UUIDField):
    default_error_messages = {**COMMON_MESSAGES, "invalid": "must be a UUID string"}

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StringMapField(serializers.DictField):
    """A JSON object of strings (capsule metadata); which keys are allowed is the action's rule."""

    child = StrictCharField(allow_blank=True)
    default_error_messages = {**COMMON_MESSAGES, "not_a_dict": "must be an object of strings"}


class StrictSerializer(serializers.Serializer[dict[str, Any]]):
    """A request body: a JSON object with only the declared fields."""

    default_error_messages = {"invalid": "request body must be a JSON object"}

    def run_validation(self, data: Any = empty) -> Any:
        # DRF would answer a JSON `null` body with "No data provided".
        if data is None:
            raise serializers.ValidationError(
                {api_settings.NON_FIELD_ERRORS_KEY: [self.error_messages["invalid"]]}
            )
        return super().run_validation(data)

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        if isinstance(data, Mapping):
            unknown = [repr(name) for name in data if name not in self.fields]
            if unknown:
                noun = "field" if len(unknown) == 1 else "fields"
                message = f"unknown {noun} {', '.join(unknown)}"
                raise serializers.ValidationError({api_settings.NON_FIELD_ERRORS_KEY: [message]})
        return super().to_internal_value(data)
