"""Team quotas through the API: a create past a quota answers 403 `quota_exceeded`, and an operator's
override in the admin, or destroying a capsule, makes room again."""

import pytest
from django.urls import reverse

from capsules.models import Host, Sandbox, Team
from tests.api import error
from tests.api.contract import ContractClient
from tests.support.admin import change_form_data, staff_client_with

CAPSULES = "/v1/capsules"
PAUSED_NOTE = " (paused capsules count until they are destroyed)"


@pytest.fixture
def full_team(team: Team, host: Host) -> Team:
    """A team allowed one capsule, which it has (running on the real agent)."""
    Team.objects.filter(pk=team.pk).update(max_capsules=1)
    Sandbox.objects.create(team=team, host=host, status=Sandbox.Status.RUNNING)
    return team


def test_create_past_a_quota_answers_403_quota_exceeded(team_client: ContractClient, full_team: Team) -> None:
    response = team_client.post(CAPSULES, {}, format="json")
    assert response.status_code == 403
    assert response.json() == error(
        "quota_exceeded", "capsule quota exceeded: the team's limit is 1 capsule and it has 1" + PAUSED_NOTE
    )
    assert Sandbox.objects.filter(team=full_team).count() == 1


def test_memory_quota_names_the_limit_and_the_use(key_client: ContractClient, team: Team, host: Host) -> None:
    Team.objects.filter(pk=team.pk).update(max_memory_mb=1024)
    assert key_client.post(CAPSULES, {"memory_mb": 768}, format="json").status_code == 201
    response = key_client.post(CAPSULES, {"memory_mb": 512}, format="json")
    assert response.status_code == 403
    assert response.json() == error(
        "quota_exceeded",
        "memory quota exceeded: the team's limit is 1024 MB, its capsules hold 768 MB "
        "and this one asks for 512 MB" + PAUSED_NOTE,
    )


def test_the_admin_override_lifts_the_quota(key_client: ContractClient, full_team: Team) -> None:
    assert key_client.post(CAPSULES, {}, format="json").status_code == 403
    operator = staff_client_with("operator", "view_team", "change_team")
    page = operator.get(reverse("admin:capsules_team_change", args=[full_team.pk]))
    saved = operator.post(page.request["PATH_INFO"], change_form_data(page, max_capsules=2))
    assert saved.status_code == 302
    response = key_client.post(CAPSULES, {}, format="json")
    assert response.status_code == 201
    assert response.json()["status"] == "running"


def test_destroying_a_capsule_makes_room(key_client: ContractClient, team: Team, host: Host) -> None:
    Team.objects.filter(pk=team.pk).update(max_capsules=1)
    first = key_client.post(CAPSULES, {}, format="json").json()
    assert key_client.post(CAPSULES, {}, format="json").status_code == 403
    assert key_client.delete(f"{CAPSULES}/{first['id']}").status_code == 204
    assert key_client.post(CAPSULES, {}, format="json").status_code == 201


def test_another_teams_capsules_do_not_count(
    key_client: ContractClient, team: Team, other_team: Team, host: Host
) -> None:
    Team.objects.filter(pk=team.pk).update(max_capsules=1)
    Sandbox.objects.create(team=other_team, host=host, status=Sandbox.Status.RUNNING)
    assert key_client.post(CAPSULES, {}, format="json").status_code == 201
