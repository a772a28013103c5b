"""JWT pairs for a user acting for one team: both tokens carry a `team_id` claim."""

from typing import Any

from rest_framework_simplejwt.tokens import RefreshToken, Token

from capsules.models import Team

TEAM_CLAIM = "team_id"


def tokens_for(user: Any, team: Team) -> dict[str, str]:
    """An access/refresh pair for `user` acting for `team`.

    SimpleJWT copies the refresh token's claims (all but type, exp, jti and iat)
    into `refresh.access_token`, so the claim set here reaches both tokens.
    """
    refresh = RefreshToken.for_user(user)
    refresh[TEAM_CLAIM] = str(team.pk)
    return {"access": str(refresh.access_token), "refresh": str(refresh)}


def team_claim(validated_token: Token | Any) -> str | None:
    """The token's team id, or None if it carries none."""
    value = validated_token.get(TEAM_CLAIM)
    return value if isinstance(value, str) and value else None
