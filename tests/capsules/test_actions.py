"""Capsule actions against a real host agent: each transition, each refusal, agent failures,
idle reaping and the terminal-session records."""

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import grpc
import pytest
from django.db import connection
from django.utils import timezone
from pytest_django import Settings

from capsules import agents
from capsules.actions import (
    ActionError,
    create_capsule,
    destroy_capsule,
    kill_terminal_session,
    list_terminal_sessions,
    pause_capsule,
    ping_capsule,
    reap_idle,
    record_activity,
    record_terminal_exit,
    record_terminal_started,
    record_viewer,
    resume_capsule,
)
from capsules.models import Host, Sandbox, Team, TerminalSession
from capsules.states import can_move, sources
from protos import hostagent_pb2 as pb
from protos import hostagent_pb2_grpc as pb_grpc
from tests.support.hostagent import HostAgentProcess, new_tag, start_hostagent, start_terminal

Status = Sandbox.Status
ALL_STATUSES = list(Status)


# Fixtures and helpers


@pytest.fixture
def capsule_on_agent(team: Team, agent_host: Host) -> Sandbox:
    """A running capsule created through the action, so it exists on the real agent."""
    return create_capsule(team)


@pytest.fixture
def paused_capsule(capsule_on_agent: Sandbox) -> Sandbox:
    return pause_capsule(capsule_on_agent)


@pytest.fixture(scope="module")
def guarded_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostAgentProcess]:
    """An agent that requires a token the control plane does not have: every call is UNAUTHENTICATED."""
    process = start_hostagent(tmp_path_factory.mktemp("guarded"), token="not-the-control-planes")
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def black_hole() -> Iterator[str]:
    """An address that accepts TCP connections and never answers, so a call hangs until its deadline."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    accepted: list[socket.socket] = []

    def accept() -> None:
        with contextlib.suppress(OSError):
            while True:
                accepted.append(listener.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()
        for conn in accepted:
            conn.close()


def make(team: Team, host: Host | None, status: str, **fields: Any) -> Sandbox:
    return Sandbox.objects.create(team=team, host=host, status=status, **fields)


def snapshot(capsule: Sandbox) -> dict[str, Any]:
    return dict(Sandbox.objects.filter(pk=capsule.pk).values().get())


def agent_sandboxes(agent: HostAgentProcess) -> dict[str, str]:
    with grpc.insecure_channel(agent.address) as channel:
        response = pb_grpc.HostAgentStub(channel).ListSandboxes(pb.ListSandboxesRequest(), timeout=10)
    return {s.sandbox_id: s.state for s in response.sandboxes}


def refused(action: Any, *args: Any) -> ActionError:
    with pytest.raises(ActionError) as caught:
        action(*args)
    return caught.value


# Create


def test_create_starts_a_running_capsule_on_the_agent(
    team: Team, agent_host: Host, agent: HostAgentProcess
) -> None:
    before = timezone.now()
    capsule = create_capsule(team, template="minimal", vcpus=2, memory_mb=256, metadata={"env": "ci"})
    capsule.refresh_from_db()
    assert capsule.status == Status.RUNNING
    assert capsule.host == agent_host
    assert (capsule.vcpus, capsule.memory_mb, capsule.disk_size_mb) == (2, 256, 1024)
    assert capsule.metadata == {"env": "ci"}
    assert capsule.started_at is not None
    assert capsule.started_at >= before
    assert capsule.last_active_at == capsule.started_at
    assert agent_sandboxes(agent)[capsule.pk] == "running"


def test_create_fills_in_the_defaults(team: Team, agent_host: Host) -> None:
    capsule = create_capsule(team)
    assert (capsule.template, capsule.vcpus, capsule.memory_mb, capsule.timeout_sec) == (
        "minimal",
        1,
        512,
        300,
    )


def test_create_with_invalid_parameters_creates_nothing(team: Team, agent_host: Host) -> None:
    error = refused(lambda: create_capsule(team, vcpus=0))
    assert error.code == "invalid_request"
    assert error.message == "vcpus must be between 1 and 8, got 0"
    assert not Sandbox.objects.exists()


def test_create_without_any_host_creates_nothing(team: Team) -> None:
    error = refused(lambda: create_capsule(team))
    assert error.code == "host_unavailable"
    assert error.message == "no host has capacity for this capsule"
    assert not Sandbox.objects.exists()


def test_create_without_a_host_that_fits_creates_nothing(team: Team, agent_host: Host) -> None:
    Host.objects.filter(pk=agent_host.pk).update(memory_mb=256)
    assert refused(lambda: create_capsule(team, memory_mb=512)).code == "host_unavailable"
    assert not Sandbox.objects.exists()


def test_create_on_a_host_that_does_not_answer_ends_in_error(team: Team, dead_host: Host) -> None:
    error = refused(lambda: create_capsule(team))
    assert (error.code, error.message) == (
        "host_unavailable",
        "sandbox host is not reachable",
    )
    assert Sandbox.objects.get().status == Status.ERROR


def test_create_refused_by_the_agent_is_an_agent_error(team: Team, guarded_agent: HostAgentProcess) -> None:
    Host.objects.create(address=guarded_agent.address)
    error = refused(lambda: create_capsule(team))
    assert error.code == "agent_error"
    assert "UNAUTHENTICATED" in error.message
    assert Sandbox.objects.get().status == Status.ERROR


# Pause and resume


def test_pause_pauses_on_the_agent(capsule_on_agent: Sandbox, agent: HostAgentProcess) -> None:
    capsule = pause_capsule(capsule_on_agent)
    assert capsule.status == Status.PAUSED
    assert snapshot(capsule)["status"] == Status.PAUSED
    assert agent_sandboxes(agent)[capsule.pk] == "paused"


def test_resume_resumes_on_the_agent_and_counts_as_activity(
    paused_capsule: Sandbox, agent: HostAgentProcess
) -> None:
    Sandbox.objects.filter(pk=paused_capsule.pk).update(last_active_at=timezone.now() - timedelta(hours=1))
    before = timezone.now()
    capsule = resume_capsule(paused_capsule)
    assert capsule.status == Status.RUNNING
    assert capsule.last_active_at is not None
    assert capsule.last_active_at >= before
    assert agent_sandboxes(agent)[capsule.pk] == "running"


@pytest.mark.parametrize("status", [s for s in ALL_STATUSES if not can_move(s, Status.PAUSING)])
def test_pause_in_any_other_state_is_refused_and_changes_nothing(
    team: Team, agent_host: Host, status: str
) -> None:
    capsule = make(team, agent_host, status)
    before = snapshot(capsule)
    error = refused(pause_capsule, capsule)
    assert (error.code, error.message) == (
        "invalid_state",
        f"capsule is {status}; cannot pause",
    )
    assert snapshot(capsule) == before


@pytest.mark.parametrize("status", [s for s in ALL_STATUSES if not can_move(s, Status.RESUMING)])
def test_resume_in_any_other_state_is_refused_and_changes_nothing(
    team: Team, agent_host: Host, status: str
) -> None:
    capsule = make(team, agent_host, status)
    before = snapshot(capsule)
    error = refused(resume_capsule, capsule)
    assert (error.code, error.message) == (
        "invalid_state",
        f"capsule is {status}; cannot resume",
    )
    assert snapshot(capsule) == before


def test_pause_on_a_host_that_does_not_answer_puts_the_status_back(team: Team, dead_host: Host) -> None:
    capsule = make(team, dead_host, Status.RUNNING)
    error = refused(pause_capsule, capsule)
    assert error.code == "host_unavailable"
    assert snapshot(capsule)["status"] == Status.RUNNING


def test_resume_on_a_host_that_does_not_answer_puts_the_status_back(team: Team, dead_host: Host) -> None:
    capsule = make(team, dead_host, Status.PAUSED)
    assert refused(resume_capsule, capsule).code == "host_unavailable"
    assert snapshot(capsule)["status"] == Status.PAUSED


def test_pause_of_a_capsule_the_agent_does_not_have_is_an_agent_error(team: Team, agent_host: Host) -> None:
    capsule = make(team, agent_host, Status.RUNNING)
    error = refused(pause_capsule, capsule)
    assert error.code == "agent_error"
    assert "NOT_FOUND" in error.message
    assert capsule.pk in error.message
    assert snapshot(capsule)["status"] == Status.RUNNING


@pytest.mark.parametrize("action", [pause_capsule, destroy_capsule])
def test_capsule_on_an_unreachable_host_is_refused_without_a_call(
    team: Team, agent_host: Host, action: Any
) -> None:
    Host.objects.filter(pk=agent_host.pk).update(status=Host.Status.UNREACHABLE)
    capsule = make(team, agent_host, Status.RUNNING)
    before = snapshot(capsule)
    error = refused(action, capsule)
    assert (error.code, error.message) == (
        "host_unavailable",
        "sandbox host is not reachable",
    )
    assert snapshot(capsule) == before


def test_pause_of_a_capsule_without_host_is_refused(team: Team) -> None:
    capsule = make(team, None, Status.RUNNING)
    assert refused(pause_capsule, capsule).code == "host_unavailable"
    assert snapshot(capsule)["status"] == Status.RUNNING


@pytest.mark.django_db(transaction=True)
def test_concurrent_request_sees_the_operation_in_progress(
    team: Team, black_hole: str, settings: Settings
) -> None:
    settings.HOSTAGENT_RPC_TIMEOUT = 3
    capsule = make(team, Host.objects.create(address=black_hole), Status.RUNNING)
    outcome: list[ActionError] = []

    def first_pause() -> None:
        try:
            pause_capsule(capsule)
        except ActionError as exc:
            outcome.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=first_pause)
    thread.start()
    try:
        deadline = time.monotonic() + 3
        while snapshot(capsule)["status"] != Status.PAUSING:
            assert time.monotonic() < deadline, "the first pause never committed `pausing`"
            time.sleep(0.02)
        for action, verb in (
            (pause_capsule, "pause"),
            (resume_capsule, "resume"),
            (destroy_capsule, "destroy"),
        ):
            error = refused(action, capsule)
            assert error.code == "invalid_state"
            assert error.message == f"capsule is pausing; cannot {verb}"
    finally:
        thread.join(10)
    assert [e.code for e in outcome] == ["host_unavailable"]
    assert snapshot(capsule)["status"] == Status.RUNNING


# Destroy


def test_destroy_removes_the_capsule_from_the_agent(
    capsule_on_agent: Sandbox, agent: HostAgentProcess
) -> None:
    capsule = destroy_capsule(capsule_on_agent)
    assert capsule.status == Status.STOPPED
    assert snapshot(capsule)["status"] == Status.STOPPED
    assert capsule.pk not in agent_sandboxes(agent)


def test_destroy_of_a_paused_capsule(paused_capsule: Sandbox, agent: HostAgentProcess) -> None:
    assert destroy_capsule(paused_capsule).status == Status.STOPPED
    assert paused_capsule.pk not in agent_sandboxes(agent)


@pytest.mark.parametrize("status", sorted(sources(Status.STOPPING) - {Status.PAUSED}))
def test_destroy_of_a_capsule_the_agent_does_not_have_is_done(
    team: Team, agent_host: Host, status: str
) -> None:
    capsule = make(team, agent_host, status)
    assert destroy_capsule(capsule).status == Status.STOPPED


def test_destroy_of_a_capsule_that_never_got_a_host(team: Team) -> None:
    capsule = make(team, None, Status.ERROR)
    assert destroy_capsule(capsule).status == Status.STOPPED


@pytest.mark.parametrize("status", [s for s in ALL_STATUSES if not can_move(s, Status.STOPPING)])
def test_destroy_in_these_states_is_refused_and_changes_nothing(
    team: Team, agent_host: Host, status: str
) -> None:
    capsule = make(team, agent_host, status)
    before = snapshot(capsule)
    error = refused(destroy_capsule, capsule)
    assert (error.code, error.message) == (
        "invalid_state",
        f"capsule is {status}; cannot destroy",
    )
    assert snapshot(capsule) == before


@pytest.mark.parametrize("status", [Status.RUNNING, Status.PAUSED, Status.ERROR])
def test_destroy_on_a_host_that_does_not_answer_puts_the_status_back(
    team: Team, dead_host: Host, status: str
) -> None:
    capsule = make(team, dead_host, status)
    assert refused(destroy_capsule, capsule).code == "host_unavailable"
    assert snapshot(capsule)["status"] == status


def test_destroy_ends_the_terminal_records(capsule_on_agent: Sandbox) -> None:
    record_terminal_started(capsule_on_agent.pk, "pty-00000001", "user:alice", "/bin/bash", 42)
    record_viewer(capsule_on_agent.pk, "pty-00000001", 2)
    destroy_capsule(capsule_on_agent)
    session = TerminalSession.objects.get()
    assert session.ended_at is not None
    assert session.viewers == 0


def test_unknown_capsule_is_not_found(team: Team) -> None:
    error = refused(pause_capsule, Sandbox(team=team))
    assert error.code == "not_found"


# Activity


def test_ping_records_activity(team: Team, host: Host) -> None:
    capsule = make(team, host, Status.RUNNING, last_active_at=timezone.now() - timedelta(hours=1))
    before = timezone.now()
    pinged = ping_capsule(capsule)
    assert pinged.last_active_at is not None
    assert pinged.last_active_at >= before


@pytest.mark.parametrize("status", [Status.PAUSED, Status.STOPPED, Status.MISSING])
def test_ping_of_a_capsule_not_running_is_refused(team: Team, host: Host, status: str) -> None:
    capsule = make(team, host, status)
    before = snapshot(capsule)
    error = refused(ping_capsule, capsule)
    assert (error.code, error.message) == ("invalid_state", f"capsule is {status}; cannot ping")
    assert snapshot(capsule) == before


def test_record_activity_sets_last_active_at(team: Team, host: Host) -> None:
    capsule = make(team, host, Status.RUNNING)
    before = timezone.now()
    record_activity(capsule.pk)
    capsule.refresh_from_db()
    assert capsule.last_active_at is not None
    assert capsule.last_active_at >= before


# Reaping idle capsules


def idle_for(capsule: Sandbox, seconds: int) -> None:
    Sandbox.objects.filter(pk=capsule.pk).update(last_active_at=timezone.now() - timedelta(seconds=seconds))


def test_reaper_pauses_a_capsule_idle_past_its_timeout(
    capsule_on_agent: Sandbox, agent: HostAgentProcess
) -> None:
    idle_for(capsule_on_agent, 301)
    assert reap_idle() == [capsule_on_agent.pk]
    assert snapshot(capsule_on_agent)["status"] == Status.PAUSED
    assert agent_sandboxes(agent)[capsule_on_agent.pk] == "paused"


def test_reaper_leaves_a_capsule_within_its_timeout(team: Team, agent_host: Host) -> None:
    capsule = make(team, agent_host, Status.RUNNING, timeout_sec=300)
    idle_for(capsule, 299)
    assert reap_idle() == []
    assert snapshot(capsule)["status"] == Status.RUNNING


def test_reaper_never_pauses_a_capsule_with_timeout_zero(team: Team, agent_host: Host) -> None:
    capsule = make(team, agent_host, Status.RUNNING, timeout_sec=0)
    idle_for(capsule, 10**6)
    assert reap_idle() == []
    assert snapshot(capsule)["status"] == Status.RUNNING


def test_recent_activity_postpones_the_pause(team: Team, agent_host: Host) -> None:
    long_ago = timezone.now() - timedelta(hours=1)
    capsule = make(team, agent_host, Status.RUNNING, timeout_sec=300, started_at=long_ago)
    record_activity(capsule.pk)
    assert reap_idle() == []


def test_reaper_counts_from_the_start_when_there_was_no_activity(capsule_on_agent: Sandbox) -> None:
    started = timezone.now() - timedelta(seconds=301)
    Sandbox.objects.filter(pk=capsule_on_agent.pk).update(last_active_at=None, started_at=started)
    assert reap_idle(started + timedelta(seconds=299)) == []
    assert reap_idle() == [capsule_on_agent.pk]


def test_reaper_only_looks_at_running_capsules(team: Team, agent_host: Host) -> None:
    for status in ALL_STATUSES:
        if status != Status.RUNNING:
            idle_for(make(team, agent_host, status, timeout_sec=60), 3600)
    assert reap_idle() == []


def test_reaper_goes_on_after_a_capsule_it_cannot_pause(
    capsule_on_agent: Sandbox, team: Team, dead_host: Host
) -> None:
    unreachable = make(team, dead_host, Status.RUNNING, timeout_sec=60)
    idle_for(unreachable, 3600)
    idle_for(capsule_on_agent, 3600)
    assert reap_idle() == [capsule_on_agent.pk]
    assert snapshot(unreachable)["status"] == Status.RUNNING


# Terminals on the agent


def start_pty(agent: HostAgentProcess, sandbox_id: str, *argv: str, owner: str = "") -> tuple[str, int]:
    async def start() -> tuple[str, int]:
        async with grpc.aio.insecure_channel(agent.address) as channel:
            stub = pb_grpc.HostAgentStub(channel)
            _, started = await start_terminal(stub, sandbox_id, argv[0], *argv[1:], owner=owner)
            return started.tag, started.pid

    return asyncio.run(start())


def test_list_merges_the_agent_sessions_with_their_records(
    capsule_on_agent: Sandbox, agent: HostAgentProcess
) -> None:
    tag, pid = start_pty(agent, capsule_on_agent.pk, "/bin/sh", "-c", "sleep 30")
    record_terminal_started(capsule_on_agent.pk, tag, "user:alice", "/bin/sh -c 'sleep 30'", pid)
    record_viewer(capsule_on_agent.pk, tag, +1)
    [info] = list_terminal_sessions(capsule_on_agent)
    assert (info.tag, info.pid, info.started_by, info.viewers) == (tag, pid, "user:alice", 1)
    assert info.command == "/bin/sh -c 'sleep 30'"
    assert not info.exited
    assert info.exit_code is None
    assert info.started_at is not None
    assert abs(info.started_at - timezone.now()) < timedelta(minutes=1)


def test_list_shows_sessions_the_control_plane_did_not_record(
    capsule_on_agent: Sandbox, agent: HostAgentProcess
) -> None:
    tag, _ = start_pty(agent, capsule_on_agent.pk, "/bin/sh", "-c", "sleep 30", owner="key:wrn_ab12cd34")
    [info] = list_terminal_sessions(capsule_on_agent)
    assert (info.tag, info.started_by, info.viewers) == (tag, "key:wrn_ab12cd34", 0)


def test_list_of_a_stopped_capsule_is_refused(team: Team, agent_host: Host) -> None:
    error = refused(list_terminal_sessions, make(team, agent_host, Status.STOPPED))
    assert (error.code, error.message) == ("invalid_state", "capsule is stopped; cannot list terminals")


def test_list_on_a_host_that_does_not_answer(team: Team, dead_host: Host) -> None:
    assert refused(list_terminal_sessions, make(team, dead_host, Status.RUNNING)).code == "host_unavailable"


def test_kill_ends_the_session(capsule_on_agent: Sandbox, agent: HostAgentProcess) -> None:
    tag, _ = start_pty(agent, capsule_on_agent.pk, "/bin/sh", "-c", "sleep 30")
    kill_terminal_session(capsule_on_agent, tag)
    deadline = time.monotonic() + 10
    while not next(i for i in list_terminal_sessions(capsule_on_agent) if i.tag == tag).exited:
        assert time.monotonic() < deadline, "the killed session never exited"
        time.sleep(0.05)


def test_kill_of_an_unknown_session_is_not_found(capsule_on_agent: Sandbox) -> None:
    error = refused(kill_terminal_session, capsule_on_agent, new_tag())
    assert error.code == "not_found"


def test_kill_with_a_malformed_tag_is_refused(capsule_on_agent: Sandbox) -> None:
    error = refused(kill_terminal_session, capsule_on_agent, "../etc")
    assert error.code == "invalid_request"


def test_kill_in_a_capsule_not_running_is_refused(team: Team, agent_host: Host) -> None:
    error = refused(kill_terminal_session, make(team, agent_host, Status.STOPPED), new_tag())
    assert (error.code, error.message) == ("invalid_state", "capsule is stopped; cannot kill terminals")


# Terminal records


def test_started_session_is_recorded(capsule: Sandbox) -> None:
    record_terminal_started(capsule.pk, "pty-0000000a", "user:alice", "/bin/bash", 4242)
    session = TerminalSession.objects.get(sandbox=capsule, tag="pty-0000000a")
    assert (session.started_by, session.command, session.pid, session.viewers) == (
        "user:alice",
        "/bin/bash",
        4242,
        0,
    )
    assert session.ended_at is None
    assert session.exit_code is None


def test_viewers_go_up_and_down_but_never_below_zero(capsule: Sandbox) -> None:
    record_terminal_started(capsule.pk, "pty-0000000a", "user:alice", "/bin/bash", 1)
    record_viewer(capsule.pk, "pty-0000000a", +1)
    record_viewer(capsule.pk, "pty-0000000a", +1)
    record_viewer(capsule.pk, "pty-0000000a", -1)
    assert TerminalSession.objects.get().viewers == 1
    record_viewer(capsule.pk, "pty-0000000a", -5)
    assert TerminalSession.objects.get().viewers == 0


def test_viewer_of_an_unrecorded_session_creates_its_record(capsule: Sandbox) -> None:
    record_viewer(capsule.pk, "pty-0000000b", +1)
    assert TerminalSession.objects.get(tag="pty-0000000b").viewers == 1


def test_exit_is_recorded(capsule: Sandbox) -> None:
    record_terminal_started(capsule.pk, "pty-0000000a", "user:alice", "/bin/bash", 1)
    record_terminal_exit(capsule.pk, "pty-0000000a", 3)
    session = TerminalSession.objects.get()
    assert session.exit_code == 3
    assert session.ended_at is not None


def test_records_for_an_unknown_capsule_are_ignored(db: None) -> None:
    record_terminal_started("cl-unknown", "pty-0000000a", "user:alice", "/bin/bash", 1)
    record_viewer("cl-unknown", "pty-0000000a", 1)
    record_terminal_exit("cl-unknown", "pty-0000000a", 0)
    assert not TerminalSession.objects.exists()


def test_long_command_is_cut_to_fit(capsule: Sandbox) -> None:
    record_terminal_started(capsule.pk, "pty-0000000a", "user:alice", "x" * 1000, 1)
    assert len(TerminalSession.objects.get().command) == 500


@pytest.fixture(autouse=True)
def _fresh_channels() -> Iterator[None]:
    yield
    agents.close_channels()
