"""Who is calling the API and for which team: `X-API-Key: wrn_...` or `Authorization: Bearer <access token>`.

Both set `request.auth` to a `TeamContext`; views read the caller's team from it
and nowhere else. Credentials that are offered and refused answer 401 with the reason, and leave
an `auth.failed` event on the audit trail (audit/signins.py). `ScopeAllows` keeps API keys with the
`terminal:observe` scope to the few reads that views open to them.
"""

from dataclasses import dataclass
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework.authentication import BaseAuthentication
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request
from rest_framework_simplejwt.authentication import JWTAuthentication
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.settings import api_settings as jwt_settings
from rest_framework_simplejwt.tokens import AccessToken, Token

from audit import signins, trail
from capsules.keys import authenticate_api_key, refused_key
from capsules.models import APIKey, Team
from capsules.services import is_member
from capsules.tokens import team_claim

API_KEY_HEADER = "X-API-Key"
MISSING_CREDENTIALS = "missing credentials: send X-API-Key or Authorization: Bearer"
BAD_AUTHORIZATION = "Authorization must be 'Bearer <token>'"
# DRF answers 403 instead of 401 unless the first authenticator names a challenge.
WWW_AUTHENTICATE = 'Bearer realm="api", ApiKey realm="api"'


def bearer_token(authorization: str) -> str | None:
    """The token of an `Authorization: Bearer <token>` header's value; None when it is not one.

    The one reading of the header, for the API, the terminal socket and the hosts' heartbeats.
    """
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


@dataclass(frozen=True)
class TeamContext:
    """`request.auth` of an authenticated API call."""

    team: Team
    api_key: APIKey | None = None
    token: Token | None = None


class APIKeyPrincipal:
    """`request.user` for an API key: authenticated, but no person and no Django permissions."""

    is_authenticated = True
    is_anonymous = False
    is_active = True
    is_staff = False
    is_superuser = False
    pk = None
    id = None

    def __init__(self, api_key: APIKey) -> None:
        self.api_key = api_key
        self.username = f"key:{api_key.prefix}"

    def __str__(self) -> str:
        return self.username


class APIKeyAuthentication(BaseAuthentication):
    """`X-API-Key: wrn_...`, acting for the key's team. Unknown, malformed and revoked keys look alike."""

    def authenticate(self, request: Request) -> tuple[APIKeyPrincipal, TeamContext] | None:
        raw_key = request.META.get("HTTP_X_API_KEY")
        if raw_key is None:
            return None
        api_key = authenticate_api_key(raw_key.strip())
        if api_key is None:
            record_refused_key(request, raw_key.strip())
            raise AuthenticationFailed("invalid API key")
        return APIKeyPrincipal(api_key), TeamContext(team=api_key.team, api_key=api_key)

    def authenticate_header(self, request: Request) -> str:
        return WWW_AUTHENTICATE


def record_refused_key(request: Request, raw_key: str) -> None:
    """The audit event of a refused API key: a revoked key is named (its display prefix, its
    team, which then sees it in its trail); of an unknown or malformed one nothing is kept."""
    revoked = refused_key(raw_key)
    if revoked is None:
        signins.auth_failed(request, "unknown or malformed API key", signins.API_KEY)
        return
    signins.auth_failed(
        request,
        "revoked API key",
        signins.API_KEY,
        actor=trail.key_actor(revoked),
        team_id=revoked.team_id,
        prefix=revoked.prefix,
    )


def _existing_team(team_id: str | None) -> Team | None:
    try:
        return Team.objects.filter(pk=team_id).first() if team_id else None
    except (ValueError, DjangoValidationError):
        return None


class TeamJWTAuthentication(JWTAuthentication):
    """`Authorization: Bearer <access token>` whose `team_id` claim is a team of the active user."""

    def authenticate(self, request: Request) -> tuple[Any, TeamContext] | None:  # type: ignore[override]
        header = self.get_header(request)
        if header is None:
            return None
        try:
            token = self.get_validated_token(self.get_raw_token(header))
        except AuthenticationFailed as exc:
            signins.auth_failed(request, str(exc.detail), signins.BEARER)
            raise
        user = None
        try:
            user = self.get_user(token)
            team = self.get_team(user, token)
        except AuthenticationFailed as exc:
            # The token is genuine (signed, unexpired): its user (inactive ones too) and team are
            # worth naming.
            user = user or self.user_named(token)
            actor = trail.ANONYMOUS if user is None else trail.user_actor(user)
            claimed = _existing_team(team_claim(token))
            team_id = claimed.pk if claimed is not None else None
            signins.auth_failed(request, str(exc.detail), signins.BEARER, actor=actor, team_id=team_id)
            raise
        return user, TeamContext(team=team, token=token)

    def get_team(self, user: Any, validated_token: Token) -> Team:
        """The token's team, which the user must still belong to."""
        team_id = team_claim(validated_token)
        if team_id is None:
            raise AuthenticationFailed("token has no team")
        team = Team.objects.filter(pk=team_id).first() if is_member(user, team_id) else None
        if team is None:
            raise AuthenticationFailed("not a member of the token's team")
        return team

    def authenticate_header(self, request: Request) -> str:
        return WWW_AUTHENTICATE

    def get_raw_token(self, header: bytes) -> bytes:
        # SimpleJWT hands the header over as bytes (HTTP headers are latin-1).
        token = bearer_token(header.decode("latin1"))
        if token is None:
            raise AuthenticationFailed(BAD_AUTHORIZATION)
        return token.encode("latin1")

    def get_validated_token(self, raw_token: bytes) -> Token:
        try:
            return AccessToken(raw_token)  # type: ignore[arg-type]  # bytes are accepted too
        except TokenError as exc:
            raise AuthenticationFailed(str(exc).lower()) from None

    def user_named(self, validated_token: Token) -> Any | None:
        """The token's user, active or not; None if there is none."""
        user_id = validated_token.get(jwt_settings.USER_ID_CLAIM)
        users = get_user_model().objects.filter(**{jwt_settings.USER_ID_FIELD: user_id})
        return users.first() if user_id is not None else None

    def get_user(self, validated_token: Token) -> Any:
        user = self.user_named(validated_token)
        if user is None:
            raise AuthenticationFailed("user not found")
        if not user.is_active:
            raise AuthenticationFailed("user is inactive")
        return user


class IsTeamCaller(BasePermission):
    """Any caller authenticated for a team; which objects it reaches is up to each view's queryset."""

    def has_permission(self, request: Request, view: Any) -> bool:
        return isinstance(request.auth, TeamContext)


OBSERVE_ONLY = (
    "this API key may only observe terminals: it can list and read capsules and their terminal "
    "sessions (GET), nothing else"
)


def scope_allows(context: TeamContext, method: str, view: Any) -> bool:
    """Whether the caller's credential may make this call: a user's token and a full key may make
    any; a `terminal:observe` key only reads (GET, HEAD) of views that set `observer_readable`."""
    key = context.api_key
    if key is None or key.scope != APIKey.Scope.TERMINAL_OBSERVE:
        return True
    return method in SAFE_METHODS and method != "OPTIONS" and bool(getattr(view, "observer_readable", False))


class ScopeAllows(BasePermission):
    """A read-only key (scope `terminal:observe`) is refused everything but what it may observe."""

    message = OBSERVE_ONLY

    def has_permission(self, request: Request, view: Any) -> bool:
        context = request.auth
        return not isinstance(context, TeamContext) or scope_allows(context, request.method or "", view)
