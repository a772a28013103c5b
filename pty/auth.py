"""Who is on the other end of a terminal socket.

Header credentials (``X-API-Key``, ``Authorization: Bearer``) are checked by
``TerminalAuthMiddleware`` before the consumer runs; browsers that cannot set
headers send ``{"type": "auth", "token": ...}`` as their first frame instead; the
terminal page rides on the Django session, honoured only for same-site origins.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from channels.db import database_sync_to_async
from channels.middleware import BaseMiddleware
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.http.request import validate_host
from rest_framework.exceptions import AuthenticationFailed

from capsules.api.authentication import BAD_AUTHORIZATION, TeamJWTAuthentication, bearer_token
from capsules.keys import authenticate_api_key

API_KEY_PREFIX = "wrn_"
SCOPE_CALLER = "wrenn.caller"
SCOPE_AUTH_ERROR = "wrenn.auth_error"


class AuthFailed(Exception):
    """Credentials were offered and refused; ``str(exc)`` is what the client sees."""


@dataclass(frozen=True)
class Caller:
    # The team a key or token is bound to; None for a session user, whose
    # membership is checked against the capsule's team instead.
    team_id: str | None
    user: AbstractBaseUser | None
    method: str
    # Who this is, for the admin's list of terminal sessions ("user:alice", "key:wrn_ab12cd34").
    label: str = ""

    @property
    def is_staff(self) -> bool:
        return bool(self.user is not None and getattr(self.user, "is_staff", False))


def header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return bytes(value).decode("latin1")
    return None


def _api_key_caller(raw_key: str) -> Caller:
    key = authenticate_api_key(raw_key)
    if key is None:
        raise AuthFailed("authentication failed: invalid API key")
    return Caller(team_id=str(key.team_id), user=None, method="api_key", label=f"key:{key.prefix}")


def _jwt_caller(raw_token: str) -> Caller:
    # The same checks, in the same order and words, as the REST API's bearer authentication.
    jwt = TeamJWTAuthentication()
    try:
        token = jwt.get_validated_token(raw_token.encode())
        user = jwt.get_user(token)
        team = jwt.get_team(user, token)
    except AuthenticationFailed as exc:
        raise AuthFailed(f"authentication failed: {exc.detail}") from None
    return Caller(team_id=str(team.pk), user=user, method="jwt", label=f"user:{user.get_username()}")


@database_sync_to_async
def caller_from_token(token: str) -> Caller:
    """A first-frame credential: an API key or a SimpleJWT access token."""
    if token.startswith(API_KEY_PREFIX):
        return _api_key_caller(token)
    return _jwt_caller(token)


@database_sync_to_async
def caller_from_headers(scope: dict[str, Any]) -> Caller | None:
    api_key = header(scope, b"x-api-key")
    if api_key is not None:
        return _api_key_caller(api_key.strip())
    authorization = header(scope, b"authorization")
    if authorization is not None:
        token = bearer_token(authorization)
        if token is None:
            raise AuthFailed(f"authentication failed: {BAD_AUTHORIZATION}")
        return _jwt_caller(token)
    return None


def same_site_origin(scope: dict[str, Any]) -> bool:
    """True when the socket was opened by a page of this site (cookies may be trusted)."""
    origin = header(scope, b"origin")
    if not origin:
        return False
    hostname = urlparse(origin).hostname
    return hostname is not None and validate_host(hostname, settings.ALLOWED_HOSTS)


def session_caller(scope: dict[str, Any]) -> Caller | None:
    # A cookie rides along with any cross-site WebSocket a browser opens, so the
    # session counts only for pages served from an allowed host.
    user = scope.get("user")
    if user is None or isinstance(user, AnonymousUser) or not user.is_authenticated:
        return None
    if not user.is_active or not same_site_origin(scope):
        return None
    return Caller(team_id=None, user=user, method="session", label=f"user:{user.get_username()}")


class TerminalAuthMiddleware(BaseMiddleware):
    """Puts the header or session caller, or the reason credentials were refused, in the scope.

    Refusals are reported by the consumer as an ``error`` frame after the
    handshake, so that every client learns why, as the reference does.
    """

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        scope = dict(scope)
        try:
            scope[SCOPE_CALLER] = await caller_from_headers(scope) or session_caller(scope)
        except AuthFailed as exc:
            scope[SCOPE_CALLER] = None
            scope[SCOPE_AUTH_ERROR] = str(exc)
        return await super().__call__(scope, receive, send)
