"""Signing in: email and password for a team-scoped JWT pair, refreshing it, switching teams.

The token endpoints themselves live in capsules.views; the subclasses here only
describe them in the OpenAPI document.
"""

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.parsers import JSONParser
from rest_framework.request import Request
from rest_framework.response import Response

from capsules.api.base import TeamAPIView
from capsules.api.errors import error_response
from capsules.api.schema import RETRY_AFTER, error_responses
from capsules.api.serializers import (
    AccessTokenSerializer,
    LoginResponseSerializer,
    LoginSerializer,
    SwitchTeamSerializer,
    TokenPairSerializer,
)
from capsules.ratelimit import check_sign_in
from capsules.services import default_team_for
from capsules.tokens import TEAM_CLAIM, tokens_for
from capsules.views import (
    PublicAPIView,
    TokenObtainSerializer,
    TokenObtainView,
    TokenRefreshSerializer,
    TokenRefreshView,
    _not_a_member,
    _team_of,
    _user_for_credentials,
)

TAGS = ["auth"]
BAD_LOGIN = "invalid email or password"
KEY_CANNOT_SWITCH = "switching teams needs a user's access token (Authorization: Bearer), not an API key"


class LoginView(PublicAPIView):
    """Wrong email and wrong password answer alike."""

    parser_classes = [JSONParser]

    @extend_schema(
        tags=TAGS,
        summary="Sign in with email and password; the tokens act for the user's default team",
        request=LoginSerializer,
        responses={200: LoginResponseSerializer, **error_responses(400, 401, 403, 415, 429, 500)},
        parameters=[RETRY_AFTER],
        auth=[],
    )
    def post(self, request: Request) -> Response:
        serializer = LoginSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        check_sign_in(request, email=serializer.validated_data["email"])
        user = _user_for_credentials(request, serializer.validated_data)
        if user is None:
            return error_response(status.HTTP_401_UNAUTHORIZED, "unauthorized", BAD_LOGIN)
        team = default_team_for(user)
        if team is None:
            return _not_a_member(None)
        body = {
            **tokens_for(user, team),
            TEAM_CLAIM: str(team.pk),
            "user": {"id": user.pk, "email": user.email, "username": user.get_username()},
        }
        return Response(body)


class SwitchTeamView(TeamAPIView):
    """A team the user does not belong to answers 403, whether it exists or not."""

    @extend_schema(
        tags=TAGS,
        summary="New tokens for another team of the signed-in user (bearer tokens only)",
        request=SwitchTeamSerializer,
        responses={200: TokenPairSerializer, **error_responses(400, 401, 403, 415, 500)},
    )
    def post(self, request: Request) -> Response:
        if self.person is None:
            return error_response(status.HTTP_403_FORBIDDEN, "forbidden", KEY_CANNOT_SWITCH)
        serializer = SwitchTeamSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        team_id = serializer.validated_data["team_id"]
        team = _team_of(self.person, team_id)
        if team is None:
            return _not_a_member(team_id)
        return Response({**tokens_for(self.person, team), TEAM_CLAIM: str(team.pk)})


class DocumentedTokenObtainView(TokenObtainView):
    @extend_schema(
        tags=TAGS,
        summary="Trade a username (or email) and password for a JWT pair, for a chosen or the default team",
        request=TokenObtainSerializer,
        responses={200: TokenPairSerializer, **error_responses(400, 401, 403, 415, 429, 500)},
        parameters=[RETRY_AFTER],
        auth=[],
    )
    def post(self, request: Request) -> Response:
        return super().post(request)


class DocumentedTokenRefreshView(TokenRefreshView):
    @extend_schema(
        tags=TAGS,
        summary="A new access token for the same user and team",
        request=TokenRefreshSerializer,
        responses={200: AccessTokenSerializer, **error_responses(400, 401, 403, 415, 429, 500)},
        parameters=[RETRY_AFTER],
        auth=[],
    )
    def post(self, request: Request) -> Response:
        return super().post(request)
