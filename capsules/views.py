"""Token endpoints: trade a username (or email) and password for a team-scoped JWT pair, and refresh it.

Every error answers `{"error": {"code": ..., "message": ...}}`.
"""

from typing import Any
from uuid import UUID

from django.contrib.auth import authenticate, get_user_model
from django.contrib.auth.hashers import make_password
from rest_framework import serializers, status
from rest_framework.parsers import FormParser, JSONParser
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.settings import api_settings as jwt_settings
from rest_framework_simplejwt.tokens import RefreshToken

from audit import signins, trail
from capsules.api.errors import api_exception_handler, error_response
from capsules.models import Team
from capsules.ratelimit import check_refresh, check_sign_in
from capsules.services import default_team_for, is_member
from capsules.tokens import TEAM_CLAIM, team_claim, tokens_for

BAD_CREDENTIALS = "invalid username or password"
BAD_REFRESH = "invalid or expired refresh token"


class TokenObtainSerializer(serializers.Serializer[dict[str, Any]]):
    username = serializers.CharField(required=False, trim_whitespace=False)
    email = serializers.EmailField(required=False)
    password = serializers.CharField(trim_whitespace=False)
    team = serializers.UUIDField(required=False, allow_null=True)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if not attrs.get("username") and not attrs.get("email"):
            raise serializers.ValidationError("username or email is required")
        return attrs


class TokenRefreshSerializer(serializers.Serializer[dict[str, Any]]):
    refresh = serializers.CharField()


class PublicAPIView(APIView):
    """A JSON endpoint that needs no prior authentication and answers errors in this API's shape."""

    authentication_classes: list[Any] = []
    permission_classes: list[Any] = []
    parser_classes = [JSONParser, FormParser]
    renderer_classes = [JSONRenderer]

    def get_exception_handler(self) -> Any:
        return api_exception_handler


def _user_for_credentials(request: Request, data: dict[str, Any]) -> Any | None:
    username = data.get("username")
    if not username:
        users = list(get_user_model().objects.filter(email__iexact=data["email"])[:2])
        if len(users) != 1:
            # Spend the time a password check would, so a miss is not told apart by timing.
            make_password(data["password"])
            reason = "unknown email" if not users else "email shared by several users"
            signins.auth_failed(request, reason, signins.PASSWORD, email=data["email"])
            return None
        username = users[0].get_username()
    # ModelBackend refuses inactive users, so they get the same answer as a wrong password.
    return authenticate(request._request, username=username, password=data["password"])


def _team_of(user: Any, team_id: UUID | str | None) -> Team | None:
    """The team the tokens act for: `team_id` if the user belongs to it, else (no id) their default team."""
    if team_id is None:
        return default_team_for(user)
    if not is_member(user, team_id):
        return None
    return Team.objects.filter(pk=team_id).first()


def _not_a_member(team_id: UUID | str | None) -> Response:
    message = "not a member of any team" if team_id is None else f"not a member of team {team_id}"
    return error_response(status.HTTP_403_FORBIDDEN, "forbidden", message)


class TokenObtainView(PublicAPIView):
    """POST {username | email, password, team?} → {access, refresh, team_id}."""

    def post(self, request: Request) -> Response:
        serializer = TokenObtainSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        check_sign_in(request, username=data.get("username"), email=data.get("email"))
        user = _user_for_credentials(request, data)
        if user is None:
            return error_response(status.HTTP_401_UNAUTHORIZED, "unauthorized", BAD_CREDENTIALS)
        team_id = data.get("team")
        team = _team_of(user, team_id)
        if team is None:
            return _not_a_member(team_id)
        return Response({**tokens_for(user, team), TEAM_CLAIM: str(team.pk)})


class TokenRefreshView(PublicAPIView):
    """POST {refresh} → {access, team_id}: a new access token for the same user and team."""

    def post(self, request: Request) -> Response:
        serializer = TokenRefreshSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        check_refresh(request)
        try:
            refresh = RefreshToken(serializer.validated_data["refresh"])
        except TokenError as exc:
            signins.auth_failed(request, str(exc).lower(), signins.REFRESH)
            return error_response(status.HTTP_401_UNAUTHORIZED, "unauthorized", BAD_REFRESH)
        user_id = refresh.payload.get(jwt_settings.USER_ID_CLAIM)
        user = get_user_model().objects.filter(**{jwt_settings.USER_ID_FIELD: user_id}).first()
        if user is None or not user.is_active:
            actor = trail.ANONYMOUS if user is None else trail.user_actor(user)
            reason = "user not found" if user is None else "user is inactive"
            signins.auth_failed(request, reason, signins.REFRESH, actor=actor)
            return error_response(status.HTTP_401_UNAUTHORIZED, "unauthorized", BAD_REFRESH)
        team_id = team_claim(refresh)
        # A token minted before the user left the team must not outlive the membership.
        team = _team_of(user, team_id)
        if team is None:
            return _not_a_member(team_id)
        if team_id is None:
            refresh[TEAM_CLAIM] = str(team.pk)
        return Response({"access": str(refresh.access_token), TEAM_CLAIM: str(team.pk)})
