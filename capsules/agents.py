"""What every call to a host agent carries: the shared host-agent token, when one is set."""

from django.conf import settings

METADATA_KEY = "authorization"


def call_metadata() -> tuple[tuple[str, str], ...]:
    token = settings.HOSTAGENT_TOKEN
    return ((METADATA_KEY, f"Bearer {token}"),) if token else ()
