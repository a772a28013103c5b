"""What every authenticated endpoint shares: the two credentials, JSON in and out, the caller's team."""

from typing import Any, NoReturn, cast

from rest_framework.exceptions import NotAuthenticated
from rest_framework.generics import GenericAPIView
from rest_framework.parsers import JSONParser
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request

from audit import trail
from capsules.api.authentication import (
    MISSING_CREDENTIALS,
    APIKeyAuthentication,
    IsTeamCaller,
    ScopeAllows,
    TeamContext,
    TeamJWTAuthentication,
)
from capsules.api.errors import api_exception_handler
from capsules.live import Actor
from capsules.models import Team


class TeamAPIView(GenericAPIView[Any]):
    """An endpoint for a team's caller; subclasses scope `get_queryset()` to `self.team`.

    An API key of scope `terminal:observe` may only GET views that set `observer_readable`.
    """

    authentication_classes = [APIKeyAuthentication, TeamJWTAuthentication]
    permission_classes = [IsTeamCaller, ScopeAllows]
    # Whether an observe-only API key may GET this endpoint (capsules and terminal sessions only).
    observer_readable = False
    parser_classes = [JSONParser]
    renderer_classes = [JSONRenderer]

    def get_exception_handler(self) -> Any:
        return api_exception_handler

    def permission_denied(
        self, request: Request, message: str | None = None, code: str | None = None
    ) -> NoReturn:
        if request.successful_authenticator is None:
            raise NotAuthenticated(MISSING_CREDENTIALS)
        super().permission_denied(request, message, code)

    @property
    def caller(self) -> TeamContext:
        return cast(TeamContext, self.request.auth)

    @property
    def team(self) -> Team:
        return self.caller.team

    @property
    def actor(self) -> Actor:
        """Who the team's event streams say made a change: the API key or the signed-in person."""
        if self.caller.api_key is not None:
            return Actor("api_key", self.caller.api_key.prefix, self.caller.api_key.name)
        return Actor("user", str(self.request.user.pk), self.request.user.get_username())

    @property
    def audit_actor(self) -> trail.Actor:
        """Who the audit trail says acted: the API key or the signed-in person."""
        if self.caller.api_key is not None:
            return trail.key_actor(self.caller.api_key)
        return trail.user_actor(self.request.user)

    @property
    def where(self) -> trail.Where:
        """Where the call came from, for the audit trail."""
        return trail.where_from_request(self.request)

    @property
    def person(self) -> Any | None:
        """The signed-in user behind a bearer token; None for an API key."""
        return self.request.user if self.caller.token is not None else None
