"""JWT pairs carry the team they act for."""

from typing import Any

from rest_framework_simplejwt.tokens import AccessToken, RefreshToken

from capsules.models import Team
from capsules.tokens import team_claim, tokens_for


# SimpleJWT annotates the constructor's argument as `Token`, but it takes the encoded string.
def access_token(raw: str) -> AccessToken:
    return AccessToken(raw)  # type: ignore[arg-type]


def refresh_token(raw: str) -> RefreshToken:
    return RefreshToken(raw)  # type: ignore[arg-type]


def test_access_token_carries_the_team_claim(member: Any, team: Team) -> None:
    access = access_token(tokens_for(member, team)["access"])
    assert access["team_id"] == str(team.id)
    assert access["user_id"] == str(member.pk)


def test_refresh_token_carries_the_team_claim(member: Any, team: Team) -> None:
    refresh = refresh_token(tokens_for(member, team)["refresh"])
    assert refresh["team_id"] == str(team.id)


def test_team_claim_reads_the_claim(member: Any, team: Team) -> None:
    access = access_token(tokens_for(member, team)["access"])
    assert team_claim(access) == str(team.id)


def test_team_claim_of_a_token_without_team_is_none(member: Any) -> None:
    assert team_claim(AccessToken.for_user(member)) is None
