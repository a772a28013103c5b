"""Lookups the WebSocket consumer and the REST views share, scoped by team.

These are plain synchronous ORM functions; async callers wrap them with
`database_sync_to_async`.
"""

import uuid
from typing import Any

from django.db.models import Case, IntegerField, Value, When
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from capsules.models import Membership, Sandbox, Team
from protos.rules import is_sandbox_id


def parse_team_id(team_id: uuid.UUID | str | None) -> uuid.UUID | None:
    """The team id as a UUID, or None when it is missing or malformed."""
    if team_id is None or isinstance(team_id, uuid.UUID):
        return team_id
    try:
        return uuid.UUID(str(team_id))
    except ValueError:
        return None


def find_capsule(
    capsule_id: str, *, team_id: uuid.UUID | str | None = None, user: Any = None, any_team: bool = False
) -> Sandbox | None:
    """The capsule `capsule_id` if this caller may see it, else None.

    The one rule for every way in (the REST API, the terminal socket, the terminal page):
    - `team_id`: a caller bound to a team (an API key, an access token) sees that team's capsules;
    - `user` alone: a signed-in person sees the capsules of every team they belong to;
    - `any_team`: platform staff on the admin routes see every capsule (the caller has checked
      that it is staff).
    A missing capsule, another team's, a malformed id and a caller with none of the three all
    answer None alike, so a caller cannot learn which ids exist.
    """
    if not is_sandbox_id(capsule_id):
        return None
    capsule = Sandbox.objects.select_related("host").filter(pk=capsule_id).first()
    if capsule is None or any_team:
        return capsule
    if team_id is not None:
        return capsule if capsule.team_id == parse_team_id(team_id) else None
    if user is not None and is_member(user, capsule.team_id):
        return capsule
    return None


def touch_sandbox(sandbox_id: str) -> None:
    """Record activity now, so an idle reaper sees a long interactive session as busy."""
    Sandbox.objects.filter(pk=sandbox_id).update(last_active_at=timezone.now())


def is_member(user: Any, team_id: uuid.UUID | str | None) -> bool:
    """Whether `user` is active and belongs to the team."""
    team_uuid = parse_team_id(team_id)
    if team_uuid is None or not getattr(user, "is_active", False) or user.pk is None:
        return False
    return Membership.objects.filter(user_id=user.pk, team_id=team_uuid).exists()


_ROLE_RANK = Case(
    When(role=Membership.Role.OWNER, then=Value(0)),
    When(role=Membership.Role.ADMIN, then=Value(1)),
    default=Value(2),
    output_field=IntegerField(),
)


def default_team_for(user: Any) -> Team | None:
    """The team a token without an explicit team acts for: the user's oldest owned team, else the
    oldest team where they are admin, else the oldest team they belong to."""
    if not getattr(user, "is_active", False) or user.pk is None:
        return None
    membership = (
        Membership.objects.filter(user_id=user.pk)
        .select_related("team")
        .annotate(role_rank=_ROLE_RANK)
        .order_by("role_rank", "created_at", "pk")
        .first()
    )
    return membership.team if membership is not None else None


def terminal_path(sandbox_id: str) -> str:
    """Path of the capsule's browser terminal page."""
    # The page belongs to the pty app; fall back to its documented path if that
    # route is not installed.
    try:
        return reverse("capsule-terminal", args=[sandbox_id])
    except NoReverseMatch:
        return f"/capsules/{sandbox_id}/terminal/"
