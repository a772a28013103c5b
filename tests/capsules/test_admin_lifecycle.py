"""The capsule admin: pause, resume and destroy as actions and as buttons, the live terminal
sessions of a capsule with a kill button each, and creation through `create_capsule`.

Capsules that should work run on the session's real host agent (`agent_host`); a capsule whose
host is down points at a port where nothing listens (`dead_host`).
"""

import contextlib
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from capsules.actions import (
    ActionError,
    TerminalInfo,
    create_capsule,
    destroy_capsule,
    list_terminal_sessions,
    pause_capsule,
    record_viewer,
)
from capsules.models import Host, Sandbox, Team
from protos import hostagent_pb2 as pb
from protos import hostagent_pb2_grpc as pb_grpc
from tests.support.hostagent import HostAgentProcess, new_tag

Status = Sandbox.Status
WAIT = 10.0
DEFAULT_NETWORK = '{"allow_internet": true, "allow_out": [], "deny_out": []}'


# Fixtures


@pytest.fixture
def live_capsule(team: Team, agent_host: Host) -> Iterator[Sandbox]:
    """A running capsule on the real host agent."""
    capsule = create_capsule(team)
    yield capsule
    # The agent outlives the test: leave nothing running on it.
    with contextlib.suppress(ActionError):
        destroy_capsule(capsule)


@pytest.fixture
def paused_capsule(live_capsule: Sandbox) -> Sandbox:
    return pause_capsule(live_capsule)


@pytest.fixture
def stopped_capsule(team: Team, agent_host: Host) -> Sandbox:
    return Sandbox.objects.create(team=team, host=agent_host, status=Status.STOPPED)


@pytest.fixture
def stranded_capsule(team: Team, dead_host: Host) -> Sandbox:
    """A running capsule whose host agent does not answer."""
    return Sandbox.objects.create(team=team, host=dead_host, status=Status.RUNNING)


@pytest.fixture
def stub(agent: HostAgentProcess) -> Iterator[Any]:
    with grpc.insecure_channel(agent.address) as channel:
        yield pb_grpc.HostAgentStub(channel)


@dataclass
class Session:
    tag: str
    pid: int
    stream: Any


@pytest.fixture
def session(live_capsule: Sandbox, stub: Any) -> Iterator[Session]:
    """`sleep 600` started by alice in the live capsule, with one stream attached."""
    tag = new_tag()
    request = pb.PtyAttachRequest(
        sandbox_id=live_capsule.pk, tag=tag, cmd="/bin/sleep", args=["600"], owner="user:alice"
    )
    stream = stub.PtyAttach(request)
    event = next(stream)
    assert event.WhichOneof("event") == "started"
    yield Session(tag, event.started.pid, stream)
    stream.cancel()


@pytest.fixture
def staff_client(db: None) -> Client:
    """A staff user with no model permissions."""
    user = get_user_model().objects.create_user(username="staff", password="x", is_staff=True)
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def member_client(member: Any) -> Client:
    client = Client()
    client.force_login(member)
    return client


# Helpers


def shown(response: Any) -> list[tuple[str, str]]:
    """The messages a page showed, as (level, text)."""
    return [(message.level_tag, str(message)) for message in response.context["messages"]]


def run_action(client: Client, action: str, *capsules: Sandbox) -> Any:
    response = client.post(
        reverse("admin:capsules_sandbox_changelist"),
        {"action": action, "_selected_action": [capsule.pk for capsule in capsules]},
        follow=True,
    )
    assert response.status_code == 200
    return response


def press(client: Client, capsule: Sandbox, button: str, *args: str, **kwargs: Any) -> Any:
    return client.post(reverse(f"admin:capsules_sandbox_{button}", args=[capsule.pk, *args]), **kwargs)


def change_page(client: Client, capsule: Sandbox) -> Any:
    return client.get(reverse("admin:capsules_sandbox_change", args=[capsule.pk]))


def status_of(capsule: Sandbox) -> str:
    capsule.refresh_from_db()
    return capsule.status


def agent_sandbox_ids(stub: Any) -> set[str]:
    return {sandbox.sandbox_id for sandbox in stub.ListSandboxes(pb.ListSandboxesRequest()).sandboxes}


def wait_for_session(capsule: Sandbox, tag: str, ready: Callable[[TerminalInfo], bool]) -> TerminalInfo:
    deadline = time.monotonic() + WAIT
    while True:
        found = [info for info in list_terminal_sessions(capsule) if info.tag == tag]
        if found and ready(found[0]):
            return found[0]
        assert time.monotonic() < deadline, f"session {tag} never got there: {found}"
        time.sleep(0.05)


def session_row(response: Any, tag: str) -> str:
    match = re.search(
        rf'<tr class="terminal-session" data-tag="{tag}">(.*?)</tr>', response.content.decode(), re.S
    )
    assert match is not None, f"no row for {tag}"
    return match.group(1)


# Admin actions on the changelist


def test_pause_action_pauses_a_running_capsule(admin_client: Client, live_capsule: Sandbox) -> None:
    response = run_action(admin_client, "pause", live_capsule)
    assert shown(response) == [("success", f"{live_capsule.pk} paused")]
    assert status_of(live_capsule) == Status.PAUSED


def test_pause_action_reports_a_capsule_that_cannot_pause(
    admin_client: Client, stopped_capsule: Sandbox
) -> None:
    response = run_action(admin_client, "pause", stopped_capsule)
    assert shown(response) == [("error", f"{stopped_capsule.pk}: capsule is stopped; cannot pause")]


def test_pause_action_reports_an_unreachable_host(admin_client: Client, stranded_capsule: Sandbox) -> None:
    response = run_action(admin_client, "pause", stranded_capsule)
    assert shown(response) == [("error", f"{stranded_capsule.pk}: sandbox host is not reachable")]
    assert status_of(stranded_capsule) == Status.RUNNING


def test_resume_action_resumes_a_paused_capsule(admin_client: Client, paused_capsule: Sandbox) -> None:
    response = run_action(admin_client, "resume", paused_capsule)
    assert shown(response) == [("success", f"{paused_capsule.pk} resumed")]
    assert status_of(paused_capsule) == Status.RUNNING


def test_resume_action_reports_a_capsule_that_cannot_resume(
    admin_client: Client, live_capsule: Sandbox
) -> None:
    response = run_action(admin_client, "resume", live_capsule)
    assert shown(response) == [("error", f"{live_capsule.pk}: capsule is running; cannot resume")]


def test_resume_action_reports_an_unreachable_host(admin_client: Client, stranded_capsule: Sandbox) -> None:
    Sandbox.objects.filter(pk=stranded_capsule.pk).update(status=Status.PAUSED)
    response = run_action(admin_client, "resume", stranded_capsule)
    assert shown(response) == [("error", f"{stranded_capsule.pk}: sandbox host is not reachable")]
    assert status_of(stranded_capsule) == Status.PAUSED


def test_destroy_action_destroys_the_capsule_on_its_host(
    admin_client: Client, live_capsule: Sandbox, stub: Any
) -> None:
    response = run_action(admin_client, "destroy", live_capsule)
    assert shown(response) == [("success", f"{live_capsule.pk} destroyed")]
    assert status_of(live_capsule) == Status.STOPPED
    assert live_capsule.pk not in agent_sandbox_ids(stub)


def test_destroy_action_reports_a_stopped_capsule(admin_client: Client, stopped_capsule: Sandbox) -> None:
    response = run_action(admin_client, "destroy", stopped_capsule)
    assert shown(response) == [("error", f"{stopped_capsule.pk}: capsule is stopped; cannot destroy")]


def test_destroy_action_reports_an_unreachable_host(admin_client: Client, stranded_capsule: Sandbox) -> None:
    response = run_action(admin_client, "destroy", stranded_capsule)
    assert shown(response) == [("error", f"{stranded_capsule.pk}: sandbox host is not reachable")]
    assert status_of(stranded_capsule) == Status.RUNNING


def test_action_reports_each_capsule_on_its_own_line(
    admin_client: Client, live_capsule: Sandbox, stopped_capsule: Sandbox
) -> None:
    response = run_action(admin_client, "pause", live_capsule, stopped_capsule)
    expected = {
        live_capsule.pk: ("success", f"{live_capsule.pk} paused"),
        stopped_capsule.pk: ("error", f"{stopped_capsule.pk}: capsule is stopped; cannot pause"),
    }
    assert shown(response) == [expected[pk] for pk in sorted(expected)]


def test_bulk_delete_is_not_offered(admin_client: Client, live_capsule: Sandbox) -> None:
    response = admin_client.get(reverse("admin:capsules_sandbox_changelist"))
    choices = [value for value, _ in response.context["action_form"].fields["action"].choices]
    assert "delete_selected" not in choices
    assert {"pause", "resume", "destroy"} <= set(choices)


# Buttons on the change page


def test_change_page_has_the_three_buttons(admin_client: Client, live_capsule: Sandbox) -> None:
    content = change_page(admin_client, live_capsule).content.decode()
    for button in ("pause", "resume", "destroy"):
        url = reverse(f"admin:capsules_sandbox_{button}", args=[live_capsule.pk])
        assert f'<form method="post" action="{url}">' in content


def test_pause_button_pauses_and_returns_to_the_change_page(
    admin_client: Client, live_capsule: Sandbox
) -> None:
    response = press(admin_client, live_capsule, "pause", follow=True)
    assert response.redirect_chain[-1][0] == reverse("admin:capsules_sandbox_change", args=[live_capsule.pk])
    assert shown(response) == [("success", f"{live_capsule.pk} paused")]
    assert status_of(live_capsule) == Status.PAUSED


def test_resume_button_resumes(admin_client: Client, paused_capsule: Sandbox) -> None:
    response = press(admin_client, paused_capsule, "resume", follow=True)
    assert shown(response) == [("success", f"{paused_capsule.pk} resumed")]
    assert status_of(paused_capsule) == Status.RUNNING


def test_destroy_button_destroys(admin_client: Client, live_capsule: Sandbox, stub: Any) -> None:
    response = press(admin_client, live_capsule, "destroy", follow=True)
    assert shown(response) == [("success", f"{live_capsule.pk} destroyed")]
    assert status_of(live_capsule) == Status.STOPPED
    assert live_capsule.pk not in agent_sandbox_ids(stub)


def test_button_reports_an_invalid_state(admin_client: Client, stopped_capsule: Sandbox) -> None:
    response = press(admin_client, stopped_capsule, "resume", follow=True)
    assert response.status_code == 200
    assert shown(response) == [("error", f"{stopped_capsule.pk}: capsule is stopped; cannot resume")]


def test_button_reports_an_unreachable_host(admin_client: Client, stranded_capsule: Sandbox) -> None:
    response = press(admin_client, stranded_capsule, "pause", follow=True)
    assert response.status_code == 200
    assert ("error", f"{stranded_capsule.pk}: sandbox host is not reachable") in shown(response)


def test_button_for_a_missing_capsule_is_not_found(admin_client: Client, db: None) -> None:
    response = admin_client.post(reverse("admin:capsules_sandbox_pause", args=["cl-missing"]))
    assert response.status_code == 404


def test_buttons_accept_only_post(admin_client: Client, live_capsule: Sandbox) -> None:
    response = admin_client.get(reverse("admin:capsules_sandbox_pause", args=[live_capsule.pk]))
    assert response.status_code == 405
    assert status_of(live_capsule) == Status.RUNNING


def test_buttons_need_a_csrf_token(admin_user: Any, live_capsule: Sandbox) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    assert press(client, live_capsule, "pause").status_code == 403
    assert status_of(live_capsule) == Status.RUNNING


def test_buttons_need_the_change_permission(staff_client: Client, live_capsule: Sandbox) -> None:
    assert press(staff_client, live_capsule, "destroy").status_code == 403
    assert status_of(live_capsule) == Status.RUNNING


def test_non_staff_user_is_sent_to_the_login_page(member_client: Client, live_capsule: Sandbox) -> None:
    response = press(member_client, live_capsule, "destroy")
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))
    assert status_of(live_capsule) == Status.RUNNING


def test_non_staff_user_cannot_see_the_change_page(member_client: Client, live_capsule: Sandbox) -> None:
    response = change_page(member_client, live_capsule)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


# Terminal sessions on the change page


def test_change_page_links_to_the_terminal_page(admin_client: Client, live_capsule: Sandbox) -> None:
    content = change_page(admin_client, live_capsule).content.decode()
    assert f'href="{reverse("capsule-terminal", args=[live_capsule.pk])}"' in content


def test_change_page_lists_a_live_terminal_session(
    admin_client: Client, live_capsule: Sandbox, session: Session, stub: Any
) -> None:
    # What the terminal consumer records for each WebSocket attached to the session.
    record_viewer(live_capsule.pk, session.tag, +1)
    typed = pb.PtyInputRequest(sandbox_id=live_capsule.pk, tag=session.tag, data=b"hello")
    assert list(stub.PtyInput(iter([typed]), timeout=10)) == [pb.PtyInputAck()]
    info = wait_for_session(
        live_capsule, session.tag, lambda info: info.bytes_in == 5 and info.bytes_out >= 5
    )

    response = change_page(admin_client, live_capsule)
    assert response.status_code == 200
    cells = re.findall(r"<td>(.*?)</td>", session_row(response, session.tag), re.S)
    assert [cell.strip() for cell in cells[:8]] == [
        session.tag,
        str(session.pid),
        "<code>/bin/sleep 600</code>",
        "user:alice",
        "1",
        "5 (5\xa0bytes)",
        f"{info.bytes_out} ({info.bytes_out}\xa0bytes)",
        "running",
    ]
    kill_url = reverse("admin:capsules_sandbox_kill_terminal", args=[live_capsule.pk, session.tag])
    assert f'action="{kill_url}"' in cells[8]


def test_exited_session_shows_its_exit_code_and_no_kill_button(
    admin_client: Client, live_capsule: Sandbox, stub: Any
) -> None:
    tag = new_tag()
    request = pb.PtyAttachRequest(sandbox_id=live_capsule.pk, tag=tag, cmd="/bin/sh", args=["-c", "exit 3"])
    events = [event.WhichOneof("event") for event in stub.PtyAttach(request, timeout=WAIT)]
    assert events[-1] == "exited"
    wait_for_session(live_capsule, tag, lambda info: info.exited)

    row = session_row(change_page(admin_client, live_capsule), tag)
    assert "exited with code 3" in row
    assert "kill" not in row


def test_kill_button_kills_the_session(admin_client: Client, live_capsule: Sandbox, session: Session) -> None:
    response = press(admin_client, live_capsule, "kill_terminal", session.tag, follow=True)
    assert shown(response) == [("success", f"{live_capsule.pk}: terminal session {session.tag} killed")]
    events = [event.WhichOneof("event") for event in session.stream]
    assert events[-1] == "exited"
    assert wait_for_session(live_capsule, session.tag, lambda info: info.exited).exited


def test_kill_button_reports_an_unknown_session(admin_client: Client, live_capsule: Sandbox) -> None:
    response = press(admin_client, live_capsule, "kill_terminal", "pty-00000000", follow=True)
    assert shown(response) == [("error", f"{live_capsule.pk}: capsule has no terminal session pty-00000000")]


def test_kill_button_needs_the_change_permission(
    staff_client: Client, live_capsule: Sandbox, session: Session
) -> None:
    assert press(staff_client, live_capsule, "kill_terminal", session.tag).status_code == 403
    assert not wait_for_session(live_capsule, session.tag, lambda info: True).exited


def test_change_page_says_when_the_host_is_not_reachable(
    admin_client: Client, stranded_capsule: Sandbox
) -> None:
    response = change_page(admin_client, stranded_capsule)
    assert response.status_code == 200
    assert "terminal sessions unavailable: sandbox host is not reachable" in response.content.decode()


# Creating and editing


def add_form_data(team: Team, **overrides: Any) -> dict[str, Any]:
    data = {
        "team": str(team.pk),
        "template": "minimal",
        "vcpus": "1",
        "memory_mb": "512",
        "timeout_sec": "300",
        "metadata": '{"purpose": "admin"}',
        "network": DEFAULT_NETWORK,
    }
    return {**data, **overrides}


def test_add_starts_the_capsule_on_a_host(
    admin_client: Client, team: Team, agent_host: Host, stub: Any
) -> None:
    response = admin_client.post(reverse("admin:capsules_sandbox_add"), add_form_data(team))
    assert response.status_code == 302
    capsule = Sandbox.objects.get()
    try:
        assert response["Location"] == reverse("admin:capsules_sandbox_changelist")
        assert (capsule.status, capsule.host, capsule.metadata) == (
            Status.RUNNING,
            agent_host,
            {"purpose": "admin"},
        )
        assert capsule.pk in agent_sandbox_ids(stub)
    finally:
        destroy_capsule(capsule)


def test_add_without_a_host_is_a_form_error(admin_client: Client, team: Team) -> None:
    response = admin_client.post(reverse("admin:capsules_sandbox_add"), add_form_data(team))
    assert response.status_code == 200
    assert response.context["adminform"].form.non_field_errors() == ["no host has capacity for this capsule"]
    assert not Sandbox.objects.exists()


def test_add_with_values_create_capsule_refuses_is_a_form_error(
    admin_client: Client, team: Team, agent_host: Host
) -> None:
    response = admin_client.post(reverse("admin:capsules_sandbox_add"), add_form_data(team, vcpus="99"))
    assert response.status_code == 200
    errors = response.context["adminform"].form.non_field_errors()
    assert len(errors) == 1
    assert errors[0].startswith("vcpus must be between 1 and")
    assert not Sandbox.objects.exists()


def test_add_past_the_teams_quota_is_a_form_error(admin_client: Client, team: Team, agent_host: Host) -> None:
    Team.objects.filter(pk=team.pk).update(max_capsules=0)
    response = admin_client.post(reverse("admin:capsules_sandbox_add"), add_form_data(team))
    assert response.status_code == 200
    assert response.context["adminform"].form.non_field_errors() == [
        "capsule quota exceeded: the team's limit is 0 capsules and it has 0 "
        "(paused capsules count until they are destroyed)"
    ]
    assert not Sandbox.objects.exists()


def test_status_is_read_only_on_the_change_page(admin_client: Client, live_capsule: Sandbox) -> None:
    form = change_page(admin_client, live_capsule).context["adminform"].form
    assert "status" not in form.fields
    assert set(form.fields) == {"timeout_sec", "metadata", "network"}


def test_change_form_saves_metadata_and_timeout_but_not_status(
    admin_client: Client, live_capsule: Sandbox
) -> None:
    response = admin_client.post(
        reverse("admin:capsules_sandbox_change", args=[live_capsule.pk]),
        {
            "timeout_sec": "600",
            "metadata": '{"owner": "ops"}',
            "network": DEFAULT_NETWORK,
            "status": "stopped",
        },
    )
    assert response.status_code == 302
    live_capsule.refresh_from_db()
    assert (live_capsule.timeout_sec, live_capsule.metadata, live_capsule.status) == (
        600,
        {"owner": "ops"},
        Status.RUNNING,
    )


def test_change_form_checks_metadata_as_the_api_does(admin_client: Client, live_capsule: Sandbox) -> None:
    response = admin_client.post(
        reverse("admin:capsules_sandbox_change", args=[live_capsule.pk]),
        {"timeout_sec": "300", "metadata": '{"agent_version": "1"}', "network": DEFAULT_NETWORK},
    )
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["metadata"] == [
        "metadata key 'agent_version' is reserved for the system"
    ]
    live_capsule.refresh_from_db()
    assert live_capsule.metadata == {}


def test_live_capsule_cannot_be_deleted(admin_client: Client, live_capsule: Sandbox) -> None:
    response = admin_client.get(reverse("admin:capsules_sandbox_delete", args=[live_capsule.pk]))
    assert response.status_code == 403


def test_stopped_capsule_can_be_deleted(admin_client: Client, stopped_capsule: Sandbox) -> None:
    response = admin_client.post(
        reverse("admin:capsules_sandbox_delete", args=[stopped_capsule.pk]), {"post": "yes"}
    )
    assert response.status_code == 302
    assert not Sandbox.objects.filter(pk=stopped_capsule.pk).exists()
