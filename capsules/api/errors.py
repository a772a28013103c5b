"""The API's one error body, `{"error": {"code": ..., "message": ...}}`, and every handler answering it.

DRF errors go through `api_exception_handler`; unknown routes under /v1/ and
/api/v1/ through `unknown_endpoint`; Django's own 404 and 500 pages through
`page_not_found` and `server_error`, which answer JSON for API paths only.
"""

import logging
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from django.views.decorators.csrf import csrf_exempt
from rest_framework import status
from rest_framework.exceptions import APIException, NotFound, PermissionDenied
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import exception_handler, set_rollback

from capsules.actions import ActionError
from capsules.ratelimit import RateLimited

logger = logging.getLogger(__name__)

API_PATH_PREFIXES = ("/v1/", "/api/v1/")
INTERNAL_ERROR_MESSAGE = "internal server error"

# The codes Wrenn clients map to their exception classes, by HTTP status. Other
# statuses keep DRF's code (`method_not_allowed`, `unsupported_media_type`, ...).
ERROR_CODES: dict[int, tuple[str, ...]] = {
    status.HTTP_400_BAD_REQUEST: ("invalid_request",),
    status.HTTP_401_UNAUTHORIZED: ("unauthorized",),
    status.HTTP_403_FORBIDDEN: ("forbidden", "quota_exceeded"),
    status.HTTP_404_NOT_FOUND: ("not_found",),
    status.HTTP_405_METHOD_NOT_ALLOWED: ("method_not_allowed",),
    status.HTTP_409_CONFLICT: ("invalid_state", "conflict"),
    status.HTTP_413_REQUEST_ENTITY_TOO_LARGE: ("too_large",),
    status.HTTP_415_UNSUPPORTED_MEDIA_TYPE: ("unsupported_media_type",),
    status.HTTP_429_TOO_MANY_REQUESTS: ("rate_limited",),
    status.HTTP_500_INTERNAL_SERVER_ERROR: ("internal_error",),
    status.HTTP_502_BAD_GATEWAY: ("agent_error",),
    status.HTTP_503_SERVICE_UNAVAILABLE: ("host_unavailable",),
    # A capsule's own disk is full (a file write): the capsule's storage, not the request's size.
    status.HTTP_507_INSUFFICIENT_STORAGE: ("insufficient_storage",),
}


# What an action's refusal answers: every ActionError code has its status here.
ACTION_STATUS: dict[str, int] = {code: status for status, codes in ERROR_CODES.items() for code in codes}


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    return {"error": {"code": code, "message": message}}


def error_response(http_status: int, code: str, message: str) -> Response:
    return Response(error_body(code, message), status=http_status)


def error_code(exc: APIException) -> str:
    codes = ERROR_CODES.get(exc.status_code)
    return codes[0] if codes else str(exc.default_code)


def flatten_errors(errors: Any) -> str:
    """ "field: message; other: message" from a serializer's nested error structure."""
    if isinstance(errors, dict):
        parts = []
        for field, value in errors.items():
            text = flatten_errors(value)
            parts.append(text if field == api_settings.NON_FIELD_ERRORS_KEY else f"{field}: {text}")
        return "; ".join(parts)
    if isinstance(errors, list):
        return " ".join(flatten_errors(item) for item in errors)
    return str(errors)


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response:
    """DRF's handler, reshaped into the API's error body; anything unexpected is logged and answers 500."""
    if isinstance(exc, ActionError):
        set_rollback()
        return error_response(ACTION_STATUS[exc.code], exc.code, exc.message)
    if isinstance(exc, RateLimited):
        limited = error_response(status.HTTP_429_TOO_MANY_REQUESTS, "rate_limited", exc.message)
        limited["Retry-After"] = str(exc.retry_after)
        return limited
    # Converted here rather than inside exception_handler so that `exc.detail` is at hand below.
    if isinstance(exc, Http404):
        exc = NotFound(*exc.args)
    elif isinstance(exc, DjangoPermissionDenied):
        exc = PermissionDenied(*exc.args)
    response = exception_handler(exc, context)
    if response is None or not isinstance(exc, APIException):
        request = context.get("request")
        logger.error(
            "unhandled error in %s %s",
            getattr(request, "method", "?"),
            getattr(request, "path", "?"),
            exc_info=exc,
        )
        set_rollback()
        return error_response(status.HTTP_500_INTERNAL_SERVER_ERROR, "internal_error", INTERNAL_ERROR_MESSAGE)
    response.data = error_body(error_code(exc), flatten_errors(exc.detail))
    return response


def is_api_path(path: str) -> bool:
    return path.startswith(API_PATH_PREFIXES)


def _json_error(http_status: int, code: str, message: str) -> JsonResponse:
    return JsonResponse(error_body(code, message), status=http_status)


@csrf_exempt
def unknown_endpoint(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
    """The last route under /v1/ and /api/v1/, so that no API path answers an HTML page, DEBUG or not."""
    return _json_error(status.HTTP_404_NOT_FOUND, "not_found", f"unknown endpoint {request.path}")


def page_not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """`handler404`: JSON for API paths, Django's page elsewhere."""
    if is_api_path(request.path):
        return _json_error(status.HTTP_404_NOT_FOUND, "not_found", f"unknown endpoint {request.path}")
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    """`handler500`: JSON for API paths, Django's page elsewhere. Django has logged the exception."""
    if is_api_path(request.path):
        return _json_error(status.HTTP_500_INTERNAL_SERVER_ERROR, "internal_error", INTERNAL_ERROR_MESSAGE)
    return defaults.server_error(request)
