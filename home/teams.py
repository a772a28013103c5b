"""Which team a person's pages show and act on: one they belong to, remembered in their session.

A team id that comes with a request (the switcher, every action's form) is believed only when the
person is a member of that team; any other id, a well-formed one of a team that exists included,
answers exactly like a missing team.
"""

from typing import Any

from django.http import HttpRequest

from capsules.models import Team
from capsules.services import default_team_for, is_member, parse_team_id

SESSION_KEY = "wrenn_home_team"


def teams_of(user: Any) -> list[Team]:
    """The teams the person belongs to, by name."""
    if not getattr(user, "is_active", False) or user.pk is None:
        return []
    return list(Team.objects.filter(memberships__user_id=user.pk).order_by("name", "pk"))


def member_team(user: Any, raw_id: object) -> Team | None:
    """The team `raw_id` names when `user` is a member of it, else None (missing, malformed or not theirs)."""
    team_id = parse_team_id(raw_id if isinstance(raw_id, str) else None)
    if team_id is None or not is_member(user, team_id):
        return None
    return Team.objects.filter(pk=team_id).first()


def current_team(request: HttpRequest) -> Team | None:
    """The team the session remembers while the person is still its member, else their default team."""
    chosen = member_team(request.user, request.session.get(SESSION_KEY))
    return chosen if chosen is not None else default_team_for(request.user)


def remember(request: HttpRequest, team: Team) -> None:
    request.session[SESSION_KEY] = str(team.pk)
