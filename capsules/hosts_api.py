"""`POST /v1/hosts/heartbeat`: a host agent reports in with its own token (`Bearer wrh_…`).

The payload is described in hosts.py. The answer tells the agent its host id and how many
seconds to wait before the next heartbeat.
"""

from typing import Any

from django.conf import settings
from rest_framework import status
from rest_framework.exceptions import ParseError, UnsupportedMediaType
from rest_framework.parsers import JSONParser
from rest_framework.request import Request
from rest_framework.response import Response

from capsules.api.authentication import bearer_token
from capsules.hosts import host_for_token, record_heartbeat
from capsules.models import Host
from capsules.validation import ValidationFailed
from capsules.views import PublicAPIView, error_response

BAD_TOKEN = "invalid host token"  # noqa: S105 - an error message, not a secret


def heartbeat_interval() -> float:
    """Seconds the agent should wait before its next heartbeat (a fraction is fine, for tests)."""
    return float(settings.WRENN_HOST_HEARTBEAT_INTERVAL_SEC)


class HeartbeatView(PublicAPIView):
    # Hosts authenticate with their own token below, not as users.
    authentication_classes: list[Any] = []
    permission_classes: list[Any] = []
    parser_classes = [JSONParser]

    def authenticate_host(self, request: Request) -> Host | None:
        token = bearer_token(request.headers.get("Authorization", ""))
        return host_for_token(token) if token else None

    def post(self, request: Request) -> Response:
        host = self.authenticate_host(request)
        if host is None:
            return error_response(status.HTTP_401_UNAUTHORIZED, "unauthorized", BAD_TOKEN)
        try:
            payload = request.data
        except (ParseError, UnsupportedMediaType) as exc:
            return error_response(status.HTTP_400_BAD_REQUEST, "invalid_request", str(exc.detail))
        try:
            host = record_heartbeat(host, payload)
        except ValidationFailed as exc:
            return error_response(status.HTTP_400_BAD_REQUEST, "invalid_request", exc.message)
        return Response({"host_id": str(host.pk), "interval": heartbeat_interval()})


heartbeat = HeartbeatView.as_view()
