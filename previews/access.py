"""Who may open a preview, decided once per request (and again every few seconds for a WebSocket).

In order: a public port lets anyone in; then the caller's credentials, the same as the API's
(`X-API-Key`, `Authorization: Bearer` of the capsule's team), a preview link's token (the query
parameter, or the cookie it was exchanged for), or the Django session of a member of the
capsule's team. Cookies (the link's and the session's) count only for requests the preview's own
pages make, or top-level navigations to it: a capsule's page is hostile code, and must not open
another capsule's preview, or a WebSocket into it, on the visitor's cookies.

No credentials answer 401 whether or not the capsule exists (no one learns which ids do);
credentials of another team answer 404, exactly as a missing capsule.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from django.conf import settings
from django.contrib.auth import HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.http.cookie import parse_cookie
from django.utils import timezone
from django.utils.crypto import constant_time_compare
from rest_framework.exceptions import AuthenticationFailed

from capsules import actions
from capsules.agents import HOST_UNREACHABLE
from capsules.api.authentication import OBSERVE_ONLY, TeamJWTAuthentication, bearer_token
from capsules.keys import authenticate_api_key
from capsules.models import APIKey, Host, Sandbox
from capsules.services import is_member
from previews import links
from previews.hosts import PreviewTarget

TOKEN_PARAM = "wrenn_preview_token"  # noqa: S105 - a query parameter's name, not a secret
COOKIE_NAME = "wrenn_preview"
ACTIVITY_EVERY = 30.0
SECURE_COOKIE_NAME = "__Host-wrenn_preview"
MISSING_CREDENTIALS = (
    "this preview needs credentials: an X-API-Key or Authorization: Bearer header of the capsule's "
    "team, a preview link (POST /v1/capsules/{id}/previews), or a signed-in session of a team member"
)


@dataclass(frozen=True)
class Denied(Exception):
    """The answer to a request that may not go through: an HTTP status, an error code, a message."""

    status: int
    code: str
    message: str


@dataclass(frozen=True)
class Access:
    """A request let in: the capsule, the address of its host agent, and how."""

    sandbox_id: str
    port: int
    host_address: str
    # "public", "api_key", "jwt", "link" or "session"; for the log.
    method: str
    # The link a token or cookie used, whose cookie a first visit sets.
    link_id: str | None = None
    # A link given as a query parameter, to be traded for a cookie for the seconds it has left.
    link_token: str | None = None
    link_seconds_left: int = 0


def headers_of(scope: dict[str, Any]) -> dict[bytes, str]:
    """The request's headers by lowercase name (the first of repeated ones; cookies joined)."""
    found: dict[bytes, str] = {}
    for key, value in scope.get("headers") or []:
        text = bytes(value).decode("latin1")
        if key == b"cookie" and key in found:
            found[key] += "; " + text
        elif key not in found:
            found[key] = text
    return found


def is_secure(scope: dict[str, Any], headers: dict[bytes, str]) -> bool:
    """`request.is_secure()`: SECURE_PROXY_SSL_HEADER when the proxy sent it, else the scheme."""
    if settings.SECURE_PROXY_SSL_HEADER:
        meta_name, secure_value = settings.SECURE_PROXY_SSL_HEADER
        name = meta_name.removeprefix("HTTP_").lower().replace("_", "-").encode("latin1")
        if name in headers:
            return headers[name].split(",", 1)[0].strip() == secure_value
    return scope.get("scheme") in ("https", "wss")


def _origin(value: str) -> tuple[str, str, int] | None:
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        return None
    return scheme, parts.hostname.lower(), port or (443 if scheme == "https" else 80)


def cookies_count(scope: dict[str, Any], headers: dict[bytes, str], target: PreviewTarget) -> bool:
    """Whether this request may be let in on cookies: it comes from the preview's own pages, or
    is a top-level navigation to it (a link followed, an address typed)."""
    own = _origin(f"{'https' if is_secure(scope, headers) else 'http'}://{target.host}")
    origin = headers.get(b"origin")
    if scope["type"] == "websocket":
        # Browsers send Origin with every WebSocket, and cookies whatever page opens it.
        return origin is not None and _origin(origin) == own
    site = headers.get(b"sec-fetch-site")
    if site is not None:
        if site in ("same-origin", "none"):
            return True
        # From elsewhere: only a top-level navigation (a link followed), never a frame another
        # site (another capsule's preview) puts the preview in, on the visitor's cookies.
        return (
            headers.get(b"sec-fetch-mode") == "navigate"
            and headers.get(b"sec-fetch-dest", "document") == "document"
            and scope.get("method") in ("GET", "HEAD")
        )
    # No fetch metadata (an older browser, or not a browser): an Origin, if any, must be its own.
    return origin is None or _origin(origin) == own


def link_cookie_name(secure: bool) -> str:
    # __Host-: over HTTPS the browser takes the cookie only host-only, Secure and for Path=/.
    return SECURE_COOKIE_NAME if secure else COOKIE_NAME


def query_token(scope: dict[str, Any]) -> str | None:
    query = bytes(scope.get("query_string") or b"").decode("latin1")
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name == TOKEN_PARAM:
            return value
    return None


def _capsule(capsule_id: str) -> Sandbox | None:
    return Sandbox.objects.select_related("host").filter(pk=capsule_id).first()


def _team_of_key(raw_key: str) -> str:
    key = authenticate_api_key(raw_key.strip())
    if key is None:
        raise Denied(401, "unauthorized", "invalid API key")
    if key.scope == APIKey.Scope.TERMINAL_OBSERVE:
        # A preview is the capsule's own service, which a read-only key must not drive.
        raise Denied(403, "forbidden", OBSERVE_ONLY)
    return str(key.team_id)


def _team_of_token(authorization: str) -> str:
    token = bearer_token(authorization)
    if token is None:
        raise Denied(401, "unauthorized", "Authorization must be 'Bearer <token>'")
    jwt = TeamJWTAuthentication()
    try:
        validated = jwt.get_validated_token(token.encode())
        user = jwt.get_user(validated)
        return str(jwt.get_team(user, validated).pk)
    except AuthenticationFailed as exc:
        raise Denied(401, "unauthorized", f"authentication failed: {exc.detail}") from None


def _session_user(session_key: str) -> Any | None:
    """The active user signed in with this session, with their current password (Django's own
    test on each request, `django.contrib.auth.get_user`); None otherwise."""
    data = import_module(settings.SESSION_ENGINE).SessionStore(session_key).load()
    user_id = data.get(SESSION_KEY)
    if user_id is None:
        return None
    user = get_user_model().objects.filter(pk=user_id).first()
    if user is None or not user.is_active:
        return None
    session_hash = data.get(HASH_SESSION_KEY) or ""
    hashes = [user.get_session_auth_hash(), *user.get_session_auth_fallback_hash()]
    if not session_hash or not any(constant_time_compare(session_hash, h) for h in hashes):
        return None
    return user


def _running(sandbox: Sandbox) -> str:
    """The address of the capsule's host agent, or the refusal of a capsule that cannot serve."""
    if sandbox.status == Sandbox.Status.MISSING:  # its host stopped answering
        raise Denied(503, "host_unavailable", HOST_UNREACHABLE)
    if sandbox.status != Sandbox.Status.RUNNING:
        raise Denied(409, "invalid_state", f"capsule {sandbox.pk} is {sandbox.status}, not running")
    host: Host | None = sandbox.host
    if host is None or host.status == Host.Status.UNREACHABLE:
        raise Denied(503, "host_unavailable", HOST_UNREACHABLE)
    return host.address


def _record_activity(sandbox: Sandbox) -> None:
    # A preview in use is the capsule in use: the idle reaper must not pause it under a visitor.
    # At most one write per ACTIVITY_EVERY (a page loads many files; a WebSocket is rechecked).
    last = sandbox.last_active_at
    if last is None or (timezone.now() - last).total_seconds() >= ACTIVITY_EVERY:
        actions.record_activity(sandbox.pk)


def authorize(scope: dict[str, Any], target: PreviewTarget) -> Access:
    """Let the request in, or raise Denied. Blocking (the database): call it in a thread."""
    headers = headers_of(scope)
    sandbox = _capsule(target.capsule_id)
    not_found = Denied(404, "not_found", f"capsule {target.capsule_id} not found")

    def access(method: str, **fields: Any) -> Access:
        if sandbox is None:
            raise not_found
        address = _running(sandbox)
        _record_activity(sandbox)
        return Access(sandbox.pk, target.port, address, method, **fields)

    def for_team(team_id: str, method: str) -> Access:
        if sandbox is None or str(sandbox.team_id) != team_id:
            raise not_found
        return access(method)

    if sandbox is not None and links.is_public(sandbox.pk, target.port):
        return access("public")
    if b"x-api-key" in headers:
        return for_team(_team_of_key(headers[b"x-api-key"]), "api_key")
    authorization = headers.get(b"authorization")
    if authorization is not None and authorization.strip().lower().startswith("bearer"):
        return for_team(_team_of_token(authorization), "jwt")
    token = query_token(scope)
    if token is not None:
        link, why = links.check_link(token, target.capsule_id, target.port)
        if link is None:
            raise Denied(401, "unauthorized", why)
        left = int((link.expires_at - timezone.now()).total_seconds())
        return access("link", link_id=link.pk, link_token=token, link_seconds_left=max(left, 1))
    refusal = MISSING_CREDENTIALS
    if cookies_count(scope, headers, target):
        cookies = parse_cookie(headers.get(b"cookie", ""))
        secure = is_secure(scope, headers)
        cookie_token = cookies.get(link_cookie_name(secure))
        if cookie_token:
            link, why = links.check_link(cookie_token, target.capsule_id, target.port)
            if link is not None:
                return access("link", link_id=link.pk)
            refusal = why
        session_key = cookies.get(settings.SESSION_COOKIE_NAME)
        user = _session_user(session_key) if session_key else None
        if user is not None:
            if sandbox is None or not is_member(user, sandbox.team_id):
                raise not_found
            return access("session")
    raise Denied(401, "unauthorized", refusal)
