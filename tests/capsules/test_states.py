"""The capsule state machine (capsules/states.py), and that the actions keep to it."""

import pytest
from django.utils import timezone

from capsules import states
from capsules.actions import IllegalTransition, mark_missing, restore_capsule
from capsules.models import Host, Sandbox, Team
from capsules.states import TRANSITIONS, Status

ALL: set[str] = set(Status)


def test_the_table_names_every_status_and_only_statuses() -> None:
    assert set(TRANSITIONS) == ALL
    for targets in TRANSITIONS.values():
        assert targets <= ALL


def reachable_from(status: str) -> set[str]:
    reached, frontier = {status}, [status]
    while frontier:
        for target in TRANSITIONS[frontier.pop()]:
            if target not in reached:
                reached.add(target)
                frontier.append(target)
    return reached


def test_every_status_is_reachable_from_a_new_capsule() -> None:
    assert reachable_from(Status.PENDING) == ALL


def test_stopped_is_the_end_and_every_other_status_can_reach_it() -> None:
    assert TRANSITIONS[Status.STOPPED] == frozenset()
    for status in ALL - {Status.STOPPED}:
        assert Status.STOPPED in reachable_from(status), status


def test_what_a_quiet_host_loses_may_all_go_missing() -> None:
    assert states.LOST_WITH_HOST
    assert all(states.can_move(status, Status.MISSING) for status in states.LOST_WITH_HOST)
    assert Status.STOPPING not in states.LOST_WITH_HOST


def test_a_missing_capsule_comes_back_only_to_a_settled_status() -> None:
    assert TRANSITIONS[Status.MISSING] - {Status.STOPPING} == {Status.RUNNING, Status.PAUSED}


@pytest.fixture
def quiet_host(db: None) -> Host:
    return Host.objects.create(address="10.0.0.9:50071")


@pytest.mark.parametrize("status", sorted(ALL))
def test_mark_missing_moves_exactly_what_the_table_allows(team: Team, quiet_host: Host, status: str) -> None:
    capsule = Sandbox.objects.create(team=team, host=quiet_host, status=status)
    moved = mark_missing(Sandbox.objects.filter(pk=capsule.pk), timezone.now())
    capsule.refresh_from_db()
    if status in states.LOST_WITH_HOST:
        assert (moved, capsule.status, capsule.status_before_missing) == (1, Status.MISSING, status)
    else:
        assert (moved, capsule.status, capsule.status_before_missing) == (0, status, "")


@pytest.mark.parametrize("status", sorted(s for s in ALL if not states.can_move(s, Status.RUNNING)))
def test_a_status_change_outside_the_table_is_refused(team: Team, quiet_host: Host, status: str) -> None:
    capsule = Sandbox.objects.create(team=team, host=quiet_host, status=status)
    with pytest.raises(IllegalTransition, match=f"{status} -> running"):
        restore_capsule(capsule, Status.RUNNING)
    capsule.refresh_from_db()
    assert capsule.status == status
