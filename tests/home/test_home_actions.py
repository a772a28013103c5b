"""The home page's forms: create, pause, resume and destroy through capsules.actions, with the
API's checks and refusals shown on the page; every form's team and capsule are the person's own or
answer like missing ones."""

import contextlib
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from capsules.actions import ActionError, destroy_capsule
from capsules.models import Host, Sandbox, Team
from capsules.validation import ValidationFailed, clean_create_params
from tests.support.hostagent import HostAgentProcess

Status = Sandbox.Status
VERBS = ("pause", "resume", "destroy")


def error_of(response: Any) -> str:
    match = re.search(r'<p class="error" id="error" role="alert">(.*?)</p>', response.content.decode(), re.S)
    assert match is not None, "the page shows no error"
    return match.group(1)


def api_message(**fields: Any) -> str:
    """What capsules.validation says of these fields, as the API's 400 does."""
    with pytest.raises(ValidationFailed) as refused:
        clean_create_params(
            fields.get("template"),
            fields.get("vcpus"),
            fields.get("memory_mb"),
            fields.get("timeout_sec"),
            None,
        )
    return refused.value.message


def create(client: Client, team: Team, **fields: str) -> Any:
    return client.post("/capsules/create/", {"team": str(team.pk), **fields})


# Create: the checks and refusals


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"vcpus": "0"}, {"vcpus": 0}),
        ({"vcpus": "999"}, {"vcpus": 999}),
        ({"memory_mb": "64"}, {"memory_mb": 64}),
        ({"timeout_sec": "-1"}, {"timeout_sec": -1}),
        ({"timeout_sec": "999999999"}, {"timeout_sec": 999999999}),
        ({"template": "windows"}, {"template": "windows"}),
    ],
)
def test_create_refuses_what_the_api_refuses_in_its_words(
    client_of: Client, team: Team, fields: dict[str, str], expected: dict[str, Any]
) -> None:
    response = create(client_of, team, **fields)
    assert response.status_code == 400
    assert error_of(response) == api_message(**expected).replace("'", "&#x27;")
    assert not Sandbox.objects.filter(team=team).exists()


@pytest.mark.parametrize(("name", "raw"), [("vcpus", "two"), ("memory_mb", "1.5"), ("timeout_sec", "1e3")])
def test_create_refuses_a_number_field_that_is_not_an_integer(
    client_of: Client, team: Team, name: str, raw: str
) -> None:
    response = create(client_of, team, **{name: raw})
    assert response.status_code == 400
    assert error_of(response) == f"{name} must be an integer, got &#x27;{raw}&#x27;"


def test_a_refused_form_keeps_what_was_typed(client_of: Client, team: Team) -> None:
    response = create(client_of, team, vcpus="999", memory_mb="1024", timeout_sec="120")
    body = response.content.decode()
    assert 'id="create-vcpus" value="999"' in body
    assert 'id="create-memory" value="1024"' in body
    assert 'id="create-timeout" value="120"' in body


def test_create_past_the_team_quota_shows_the_quota_message(
    client_of: Client, team: Team, capsule: Sandbox
) -> None:
    team.max_capsules = 1
    team.save()
    response = create(client_of, team, vcpus="1", memory_mb="512")
    assert response.status_code == 403
    assert error_of(response).startswith(
        "capsule quota exceeded: the team&#x27;s limit is 1 capsule and it has 1"
    )
    assert Sandbox.objects.filter(team=team).count() == 1


def test_create_for_a_team_of_someone_else_answers_like_a_missing_team(
    client_of: Client, other_team: Team
) -> None:
    forged = create(client_of, other_team)
    missing = client_of.post("/capsules/create/", {"team": str(uuid.uuid4())})
    absent = client_of.post("/capsules/create/", {})
    assert forged.status_code == missing.status_code == absent.status_code == 404
    assert error_of(forged) == f"team &#x27;{other_team.pk}&#x27; not found"
    assert not Sandbox.objects.filter(team=other_team).exists()


def test_create_with_no_host_says_so(client_of: Client, team: Team) -> None:
    response = create(client_of, team)
    assert response.status_code == 503
    assert error_of(response) == "no host has capacity for this capsule"


# Pause, resume, destroy: whose capsule, and the state rules


@pytest.mark.parametrize("verb", VERBS)
def test_another_team_capsule_answers_like_a_missing_one(
    client_of: Client, team: Team, foreign_capsule: Sandbox, verb: str
) -> None:
    foreign = client_of.post(f"/capsules/{foreign_capsule.pk}/{verb}/", {"team": str(team.pk)})
    missing = client_of.post(f"/capsules/cl-00000000000000000000/{verb}/", {"team": str(team.pk)})
    assert foreign.status_code == missing.status_code == 404
    assert error_of(foreign) == f"capsule &#x27;{foreign_capsule.pk}&#x27; not found"
    assert error_of(missing) == "capsule &#x27;cl-00000000000000000000&#x27; not found"
    foreign_capsule.refresh_from_db()
    assert foreign_capsule.status == Status.RUNNING


@pytest.mark.parametrize("verb", VERBS)
def test_a_forged_team_id_answers_like_a_missing_team(
    client_of: Client, other_team: Team, foreign_capsule: Sandbox, verb: str
) -> None:
    forged = client_of.post(f"/capsules/{foreign_capsule.pk}/{verb}/", {"team": str(other_team.pk)})
    missing = client_of.post(f"/capsules/{foreign_capsule.pk}/{verb}/", {"team": str(uuid.uuid4())})
    assert forged.status_code == missing.status_code == 404
    assert error_of(forged) == f"team &#x27;{other_team.pk}&#x27; not found"
    assert foreign_capsule.pk not in forged.content.decode()
    foreign_capsule.refresh_from_db()
    assert foreign_capsule.status == Status.RUNNING


@pytest.mark.parametrize("verb", VERBS)
def test_a_capsule_of_the_member_other_team_needs_that_team_in_the_form(
    client_of: Client, team: Team, second_capsule: Sandbox, verb: str
) -> None:
    response = client_of.post(f"/capsules/{second_capsule.pk}/{verb}/", {"team": str(team.pk)})
    assert response.status_code == 404


def test_resume_of_a_running_capsule_is_refused_by_the_state_rules(
    client_of: Client, team: Team, capsule: Sandbox
) -> None:
    response = client_of.post(f"/capsules/{capsule.pk}/resume/", {"team": str(team.pk)})
    assert response.status_code == 409
    assert error_of(response) == f"{capsule.pk}: capsule is running; cannot resume"


def test_pause_of_a_stopped_capsule_is_refused_by_the_state_rules(
    client_of: Client, team: Team, capsule: Sandbox
) -> None:
    Sandbox.objects.filter(pk=capsule.pk).update(status=Status.STOPPED)
    response = client_of.post(f"/capsules/{capsule.pk}/pause/", {"team": str(team.pk)})
    assert response.status_code == 409
    assert error_of(response) == f"{capsule.pk}: capsule is stopped; cannot pause"


def test_an_unreachable_host_is_reported(client_of: Client, team: Team, capsule: Sandbox, host: Host) -> None:
    Host.objects.filter(pk=host.pk).update(status=Host.Status.UNREACHABLE)
    response = client_of.post(f"/capsules/{capsule.pk}/pause/", {"team": str(team.pk)})
    assert response.status_code == 503
    assert error_of(response) == f"{capsule.pk}: sandbox host is not reachable"


@pytest.mark.parametrize("path", ["/capsules/create/", *(f"/capsules/cl-x/{verb}/" for verb in VERBS)])
def test_forms_need_the_csrf_token(member: Any, team: Team, path: str) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(member)
    assert client.post(path, {"team": str(team.pk)}).status_code == 403


@pytest.mark.parametrize("path", ["/capsules/create/", *(f"/capsules/cl-x/{verb}/" for verb in VERBS)])
def test_forms_take_only_post(client_of: Client, path: str) -> None:
    assert client_of.get(path).status_code == 405


@pytest.mark.parametrize("path", ["/capsules/create/", *(f"/capsules/cl-x/{verb}/" for verb in VERBS)])
def test_anonymous_posts_are_sent_to_the_login(db: None, team: Team, path: str) -> None:
    response = Client().post(path, {"team": str(team.pk)})
    assert response.status_code == 302
    assert response["Location"].startswith("/login/")


# Through the real host agent


@pytest.fixture
def agent_host(agent: HostAgentProcess, db: None) -> Host:
    return Host.objects.create(address=agent.address)


@pytest.fixture
def made(team: Team) -> Iterator[list[Sandbox]]:
    """Capsules the test made, destroyed afterwards so the shared agent keeps nothing."""
    capsules: list[Sandbox] = []
    yield capsules
    for capsule in Sandbox.objects.filter(team=team).exclude(status=Status.STOPPED):
        with contextlib.suppress(ActionError):
            destroy_capsule(capsule)


def test_a_capsule_is_created_paused_resumed_and_destroyed_from_the_page(
    team: Team, agent_host: Host, made: list[Sandbox]
) -> None:
    person = get_user_model().objects.create_user(username="pat", password="x")
    team.memberships.create(user=person)
    client = Client()
    client.force_login(person)
    response = create(client, team, template="minimal", vcpus="1", memory_mb="256", timeout_sec="0")
    assert response.status_code == 302, error_of(response)
    capsule = Sandbox.objects.get(team=team)
    made.append(capsule)
    assert (capsule.status, capsule.vcpus, capsule.memory_mb, capsule.timeout_sec) == (
        Status.RUNNING,
        1,
        256,
        0,
    )
    assert response["Location"] == f"/#capsule-{capsule.pk}"
    assert f"capsule {capsule.pk} created" in client.get("/").content.decode()
    for verb, after in (("pause", Status.PAUSED), ("resume", Status.RUNNING), ("destroy", Status.STOPPED)):
        response = client.post(f"/capsules/{capsule.pk}/{verb}/", {"team": str(team.pk)})
        assert response.status_code == 302, error_of(response)
        capsule.refresh_from_db()
        assert capsule.status == after
