"""Team-scoped lookups used by the WebSocket consumer."""

from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext

from capsules.models import Membership, Sandbox, Team
from capsules.services import default_team_for, find_capsule, is_member, touch_sandbox


def test_find_capsule_for_its_team(capsule: Sandbox, team: Team) -> None:
    found = find_capsule(capsule.id, team_id=team.id)
    assert found == capsule


def test_find_capsule_accepts_the_team_id_as_a_string(capsule: Sandbox, team: Team) -> None:
    assert find_capsule(capsule.id, team_id=str(team.id)) == capsule


def test_find_capsule_loads_the_host_in_the_same_query(capsule: Sandbox, team: Team) -> None:
    with CaptureQueriesContext(connection) as queries:
        found = find_capsule(capsule.id, team_id=team.id)
        assert found is not None
        assert found.host is not None
        assert found.host.address == "127.0.0.1:50071"
    assert len(queries) == 1


def test_find_capsule_of_another_team_is_none(capsule: Sandbox, other_team: Team) -> None:
    assert find_capsule(capsule.id, team_id=other_team.id) is None


def test_find_capsule_for_any_team_finds_any_team(capsule: Sandbox) -> None:
    assert find_capsule(capsule.id, any_team=True) == capsule


def test_find_capsule_for_a_person_finds_their_teams_capsules(capsule: Sandbox, member: Any) -> None:
    assert find_capsule(capsule.id, user=member) == capsule


def test_find_capsule_for_a_person_outside_the_team_is_none(capsule: Sandbox) -> None:
    outsider = get_user_model().objects.create_user(username="mallory", password="x" * 12)
    assert find_capsule(capsule.id, user=outsider) is None


def test_find_capsule_for_an_inactive_member_is_none(capsule: Sandbox, member: Any) -> None:
    member.is_active = False
    member.save()
    assert find_capsule(capsule.id, user=member) is None


def test_find_capsule_for_nobody_is_none(capsule: Sandbox) -> None:
    assert find_capsule(capsule.id) is None


def test_find_unknown_capsule_is_none(team: Team) -> None:
    assert find_capsule("cl-00000000000000000000", team_id=team.id) is None


@pytest.mark.parametrize("capsule_id", ["", "../etc", "cl-" + "0" * 40, "cl-é", ".hidden"])
def test_find_capsule_with_a_malformed_id_asks_no_database(db: None, capsule_id: str) -> None:
    with CaptureQueriesContext(connection) as queries:
        assert find_capsule(capsule_id, any_team=True) is None
    assert queries.captured_queries == []


@pytest.mark.parametrize("team_id", ["not-a-uuid", "", "123"])
def test_find_capsule_with_malformed_team_id_is_none(capsule: Sandbox, team_id: str) -> None:
    assert find_capsule(capsule.id, team_id=team_id) is None


def test_touch_sandbox_sets_last_active_at_in_one_update(capsule: Sandbox) -> None:
    with CaptureQueriesContext(connection) as queries:
        touch_sandbox(capsule.id)
    assert len(queries) == 1
    capsule.refresh_from_db()
    assert capsule.last_active_at is not None


def test_member_is_member_of_their_team(member: Any, team: Team) -> None:
    assert is_member(member, team.id)


def test_member_is_not_member_of_another_team(member: Any, other_team: Team) -> None:
    assert not is_member(member, other_team.id)


def test_inactive_user_is_not_a_member(member: Any, team: Team) -> None:
    member.is_active = False
    member.save()
    assert not is_member(member, team.id)


def test_is_member_with_malformed_team_id_is_false(member: Any) -> None:
    assert not is_member(member, "not-a-uuid")


def test_default_team_prefers_an_owned_team(member: Any, other_team: Team) -> None:
    Membership.objects.create(user=member, team=other_team, role=Membership.Role.OWNER)
    assert default_team_for(member) == other_team


def test_default_team_is_the_only_team(member: Any, team: Team) -> None:
    assert default_team_for(member) == team


def test_user_without_team_has_no_default_team(db: None) -> None:
    loner = get_user_model().objects.create_user(username="loner", password="x" * 12)
    assert default_team_for(loner) is None
