"""Who is on the other end of a terminal socket.

Header credentials (``X-API-Key``, ``Authorization: Bearer``) are checked by
``TerminalAuthMiddleware`` before the consumer runs; browsers that cannot set
headers send ``{"type": "auth", "token": ...}`` as their first frame instead (an API key, an access
token, or a share link's token, which grants one session to observe); the
terminal page rides on the Django session, honoured only when the page that opened the socket
has the socket's own origin (scheme, host and port), or one of ``CSRF_TRUSTED_ORIGINS``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from channels.db import database_sync_to_async
from channels.middleware import BaseMiddleware
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.http.request import split_domain_port, validate_host
from django.utils.http import is_same_domain
from rest_framework.exceptions import AuthenticationFailed
from rest_framework_simplejwt.tokens import Token

from audit import trail
from audit.models import AuditEvent
from capsules.api.authentication import BAD_AUTHORIZATION, TeamJWTAuthentication, bearer_token
from capsules.keys import authenticate_api_key
from capsules.models import APIKey
from shares import links as share_links

API_KEY_PREFIX = "wrn_"
SCOPE_CALLER = "wrenn.caller"
SCOPE_AUTH_ERROR = "wrenn.auth_error"
SCOPE_AUTH_ACTOR = "wrenn.auth_actor"


class AuthFailed(Exception):
    """Credentials were offered and refused; ``str(exc)`` is what the client sees. ``actor``: who
    they name, when that is known (an expired or revoked share link), for the audit trail."""

    def __init__(self, message: str, actor: trail.Actor | None = None) -> None:
        super().__init__(message)
        self.actor = actor


@dataclass(frozen=True)
class Caller:
    # The team a key or token is bound to; None for a session user, whose
    # membership is checked against the capsule's team instead.
    team_id: str | None
    user: AbstractBaseUser | None
    method: str
    # Who this is, for the admin's list of terminal sessions ("user:alice", "key:wrn_ab12cd34").
    label: str = ""
    # What pty.credentials.still_valid checks again while the socket is open: the API key's row,
    # the moment the access token stops being accepted, the session's key.
    key_id: int | None = None
    expires_at: datetime | None = None
    session_key: str | None = None
    # An API key's scope: "full", or "terminal:observe" (watch sessions, nothing else).
    scope: str = APIKey.Scope.FULL
    # A share link's id and the one session it grants ("" for every other caller).
    share_id: str = ""
    share_capsule: str = ""
    share_tag: str = ""

    @property
    def is_staff(self) -> bool:
        return bool(self.user is not None and getattr(self.user, "is_staff", False))

    @property
    def observe_only(self) -> bool:
        """Whether this caller may never type, resize or kill: a share link, an observe-scoped key."""
        return bool(self.share_id) or self.scope == APIKey.Scope.TERMINAL_OBSERVE

    @property
    def actor(self) -> trail.Actor:
        """Who this is in the audit trail."""
        if self.share_id:
            return trail.Actor(AuditEvent.ActorType.SHARE, self.label, share_id=self.share_id)
        if self.key_id is not None:
            return trail.Actor(AuditEvent.ActorType.API_KEY, self.label, api_key_id=self.key_id)
        if self.user is not None:
            return trail.Actor(AuditEvent.ActorType.USER, self.label, user_id=self.user.pk)
        return trail.ANONYMOUS


def header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return bytes(value).decode("latin1")
    return None


def _api_key_caller(raw_key: str) -> Caller:
    key = authenticate_api_key(raw_key)
    if key is None:
        raise AuthFailed("authentication failed: invalid API key")
    return Caller(
        team_id=str(key.team_id),
        user=None,
        method="api_key",
        label=f"key:{key.prefix}",
        key_id=key.pk,
        scope=key.scope,
    )


def _share_caller(token: str) -> Caller:
    link = share_links.find(token)
    reason = share_links.why_not(link)
    if reason is not None or link is None:
        actor = share_links.share_actor(link) if link is not None else None
        raise AuthFailed(f"authentication failed: {reason}", actor)
    return Caller(
        team_id=str(link.sandbox.team_id),
        user=None,
        method="share",
        label=f"share:{link.pk}",
        expires_at=link.expires_at,
        share_id=link.pk,
        share_capsule=link.sandbox_id,
        share_tag=link.tag,
    )


def token_expiry(token: Token) -> datetime:
    """When the REST API stops accepting `token`: its `exp` claim plus SimpleJWT's leeway."""
    expires = datetime.fromtimestamp(int(token["exp"]), tz=UTC)
    return expires + token.get_token_backend().get_leeway()


def _jwt_caller(raw_token: str) -> Caller:
    # The same checks, in the same order and words, as the REST API's bearer authentication.
    jwt = TeamJWTAuthentication()
    try:
        token = jwt.get_validated_token(raw_token.encode())
        user = jwt.get_user(token)
        team = jwt.get_team(user, token)
    except AuthenticationFailed as exc:
        raise AuthFailed(f"authentication failed: {exc.detail}") from None
    return Caller(
        team_id=str(team.pk),
        user=user,
        method="jwt",
        label=f"user:{user.get_username()}",
        expires_at=token_expiry(token),
    )


@database_sync_to_async
def caller_from_token(token: str) -> Caller:
    """A first-frame credential: an API key, a share link's token or a SimpleJWT access token."""
    if token.startswith(API_KEY_PREFIX):
        return _api_key_caller(token)
    if share_links.is_share_token(token):
        return _share_caller(token)
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
        if share_links.is_share_token(token):
            return _share_caller(token)
        return _jwt_caller(token)
    return None


# An origin as browsers compare them: scheme, host (lowercase) and port (the scheme's default
# when none is written).
Origin = tuple[str, str, int]
DEFAULT_PORTS = {"http": 80, "https": 443}


def parse_origin(value: str) -> Origin | None:
    """`scheme://host[:port]` as an Origin; None for anything else (`null`, other schemes)."""
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:  # a malformed IPv6 address or a port out of range
        return None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    return scheme, parts.hostname.lower(), port or DEFAULT_PORTS[scheme]


def _is_secure(scope: dict[str, Any]) -> bool:
    """`request.is_secure()` for a socket: SECURE_PROXY_SSL_HEADER when the proxy sent it, else
    the scope's scheme (daphne only serves `wss` with a TLS endpoint of its own)."""
    if settings.SECURE_PROXY_SSL_HEADER:
        meta_name, secure_value = settings.SECURE_PROXY_SSL_HEADER
        name = meta_name.removeprefix("HTTP_").lower().replace("_", "-").encode("latin1")
        value = header(scope, name)
        if value is not None:
            return value.split(",", 1)[0].strip() == secure_value
    return scope.get("scheme") in ("wss", "https")


def own_origin(scope: dict[str, Any]) -> Origin | None:
    """The origin the socket was opened on, as `request.get_host()` reads it (Host, or
    X-Forwarded-Host with USE_X_FORWARDED_HOST); None when that host is not in ALLOWED_HOSTS."""
    host = header(scope, b"x-forwarded-host") if settings.USE_X_FORWARDED_HOST else None
    host = host or header(scope, b"host")
    if not host:
        return None
    domain, _ = split_domain_port(host)
    if not domain or not validate_host(domain, settings.ALLOWED_HOSTS):
        return None
    return parse_origin(f"{'https' if _is_secure(scope) else 'http'}://{host}")


def _trusted_origin(value: str, origin: Origin) -> bool:
    """Whether CSRF_TRUSTED_ORIGINS lists `origin`, read as Django's CSRF check reads it: an exact
    origin, or `scheme://*.domain` for every subdomain (the port, if any, written in the entry)."""
    netloc = urlsplit(value.strip()).netloc.lower()
    for entry in settings.CSRF_TRUSTED_ORIGINS:
        if "*" in entry:
            trusted = urlsplit(entry)
            if trusted.scheme == origin[0] and is_same_domain(netloc, trusted.netloc.lstrip("*")):
                return True
        elif parse_origin(entry) == origin:
            return True
    return False


def same_origin(scope: dict[str, Any]) -> bool:
    """True when the page that opened the socket has the socket's own origin, scheme, host and
    port alike, or a trusted one: only then may its session cookie be taken as credentials."""
    value = header(scope, b"origin")
    origin = parse_origin(value) if value else None
    if value is None or origin is None:
        return False
    return origin == own_origin(scope) or _trusted_origin(value, origin)


def session_caller(scope: dict[str, Any]) -> Caller | None:
    # A browser sends the cookie with every WebSocket a page opens to this host, whatever the
    # page's own origin (another port of the same host included), so the session counts only
    # for the socket's own origin. Other sockets authenticate by header or by their first frame.
    user = scope.get("user")
    if user is None or isinstance(user, AnonymousUser) or not user.is_authenticated:
        return None
    if not user.is_active or not same_origin(scope):
        return None
    session = scope.get("session")
    return Caller(
        team_id=None,
        user=user,
        method="session",
        label=f"user:{user.get_username()}",
        session_key=getattr(session, "session_key", None),
    )


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
            scope[SCOPE_AUTH_ACTOR] = exc.actor
        return await super().__call__(scope, receive, send)
