"""Lifecycle events through the channel layer: each team's group gets its own events only, after
the change commits, with the SDK's SSEEvent body; a rolled-back change publishes nothing."""

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.layers import BaseChannelLayer, get_channel_layer
from django.db import connections, transaction
from django.utils import timezone

from capsules import actions, hosts, live
from capsules.models import Host, Sandbox, Team
from tests.support.hostagent import free_port

pytestmark = pytest.mark.timeout(30)

Status = Sandbox.Status
# Against hangs only: a receive that waits this long has failed.
WAIT = 10.0


@pytest.fixture
def team(transactional_db: None) -> Team:
    # Committed rows: the code under test runs in worker threads with connections of their own.
    return Team.objects.create(name="Acme", slug="acme")


@pytest.fixture
def other_team(transactional_db: None) -> Team:
    return Team.objects.create(name="Globex", slug="globex")


@pytest.fixture(autouse=True)
async def _close_thread_connections() -> AsyncIterator[None]:
    """The worker thread's connection closes with the test, so that the test database can be dropped."""
    yield
    await sync_to_async(connections.close_all)()


@pytest.fixture
def layer() -> BaseChannelLayer:
    channel_layer = get_channel_layer()
    assert channel_layer is not None
    return channel_layer


async def subscribed(layer: BaseChannelLayer, team: Team) -> AsyncIterator[str]:
    channel = await layer.new_channel()
    await layer.group_add(live.team_group(team.pk), channel)
    yield channel
    await layer.group_discard(live.team_group(team.pk), channel)


@pytest.fixture
async def ours(layer: BaseChannelLayer, team: Team) -> AsyncIterator[str]:
    async for channel in subscribed(layer, team):
        yield channel


@pytest.fixture
async def theirs(layer: BaseChannelLayer, other_team: Team) -> AsyncIterator[str]:
    async for channel in subscribed(layer, other_team):
        yield channel


async def next_event(layer: BaseChannelLayer, channel: str) -> dict[str, Any]:
    message = await asyncio.wait_for(layer.receive(channel), WAIT)
    assert message["type"] == live.TEAM_EVENT
    body: dict[str, Any] = json.loads(message["data"])
    assert body["event"] == message["event"]
    return body


def test_group_names_are_ascii_and_one_per_team(team: Team, other_team: Team) -> None:
    assert live.team_group(team.pk) == f"events.team.{team.pk.hex}"
    assert live.team_group(str(team.pk)) == live.team_group(team.pk) != live.team_group(other_team.pk)


async def test_an_event_reaches_its_teams_group_and_no_other(
    layer: BaseChannelLayer, team: Team, other_team: Team, ours: str, theirs: str
) -> None:
    await sync_to_async(live.publish)([team.pk], live.event_body(live.CAPSULE_PAUSE))
    assert (await next_event(layer, ours))["event"] == live.CAPSULE_PAUSE
    # What the other team's channel receives first is a marker sent after: nothing came before it.
    await sync_to_async(live.publish)([other_team.pk], live.event_body(live.HOST_UP))
    assert (await next_event(layer, theirs))["event"] == live.HOST_UP


async def test_a_rolled_back_change_publishes_nothing(layer: BaseChannelLayer, team: Team, ours: str) -> None:
    def change_then_fail() -> None:
        with transaction.atomic():
            live.publish([team.pk], live.event_body(live.CAPSULE_DESTROY))
            raise RuntimeError("the change failed")

    with pytest.raises(RuntimeError):
        await sync_to_async(change_then_fail)()
    await sync_to_async(live.publish)([team.pk], live.event_body(live.CAPSULE_RESUME))
    assert (await next_event(layer, ours))["event"] == live.CAPSULE_RESUME


async def test_a_capsule_lost_with_its_host_is_a_state_change_with_the_capsule(
    layer: BaseChannelLayer, team: Team, ours: str
) -> None:
    host = await Host.objects.acreate(address="10.0.0.3:50071", last_heartbeat_at=timezone.now())
    capsule = await Sandbox.objects.acreate(team=team, host=host, status=Status.RUNNING)
    await Host.objects.filter(pk=host.pk).aupdate(last_heartbeat_at=timezone.now() - hosts.dead_after() * 2)
    await sync_to_async(hosts.check_hosts)()
    down = await next_event(layer, ours)
    assert (down["event"], down["resource"], down["actor"]) == (
        live.HOST_DOWN,
        {"id": str(host.pk), "type": "host"},
        {"type": "system"},
    )
    changed = await next_event(layer, ours)
    assert changed["event"] == live.CAPSULE_STATE_CHANGED
    assert changed["metadata"] == {"from": "running", "to": "missing", "reason": "host_failure"}
    assert (changed["sandbox"]["id"], changed["sandbox"]["status"]) == (capsule.pk, "missing")
    assert "outcome" not in changed
    # Back: the host reports the capsule again.
    report = {"sandboxes": [{"id": capsule.pk, "state": "running", "pty_sessions": 0}]}
    await sync_to_async(hosts.record_heartbeat)(host, report)
    back = await next_event(layer, ours)
    assert back["metadata"] == {"from": "missing", "to": "running", "reason": "host_back"}
    assert (await next_event(layer, ours))["event"] == live.HOST_UP


async def test_an_idle_pause_that_fails_at_the_agent_says_so(
    layer: BaseChannelLayer, team: Team, ours: str
) -> None:
    # Nobody listens at this address: the agent call fails, the capsule goes back to running.
    host = await Host.objects.acreate(address=f"127.0.0.1:{free_port()}", last_heartbeat_at=timezone.now())
    capsule = await Sandbox.objects.acreate(
        team=team, host=host, status=Status.RUNNING, timeout_sec=60, started_at=timezone.now()
    )
    await sync_to_async(actions.reap_idle)(timezone.now() + timedelta(hours=1))
    failed = await next_event(layer, ours)
    assert (failed["event"], failed["outcome"], failed["actor"]) == (
        live.CAPSULE_PAUSE,
        "error",
        {"type": "system"},
    )
    assert failed["error"]
    assert failed["sandbox"]["status"] == "running"
    assert failed["resource"] == {"id": capsule.pk, "type": "capsule"}


def test_an_event_body_leaves_out_what_it_does_not_have() -> None:
    at = timezone.now()
    assert live.event_body(live.CONNECTED, at=at) == {"event": "connected", "timestamp": at.isoformat()}
    actor = live.Actor("api_key", "wrn_ab12cd34", "ci")
    body = live.event_body(live.CAPSULE_CREATE, actor=actor, outcome=live.SUCCESS, at=at)
    assert body["actor"] == {"type": "api_key", "id": "wrn_ab12cd34", "name": "ci"}


async def test_host_events_go_to_the_teams_with_capsules_there_only(
    layer: BaseChannelLayer, team: Team, other_team: Team, ours: str, theirs: str
) -> None:
    host = await Host.objects.acreate(address="10.0.0.4:50071", last_heartbeat_at=timezone.now())
    elsewhere = await Host.objects.acreate(address="10.0.0.5:50071", last_heartbeat_at=timezone.now())
    await Sandbox.objects.acreate(team=team, host=host, status=Status.RUNNING)
    await Sandbox.objects.acreate(team=other_team, host=elsewhere, status=Status.RUNNING)
    await Host.objects.filter(pk=host.pk).aupdate(last_heartbeat_at=timezone.now() - hosts.dead_after() * 2)
    await sync_to_async(hosts.check_hosts)()
    assert (await next_event(layer, ours))["event"] == live.HOST_DOWN
    # The other team's first event is a marker sent after: the host's events did not reach it.
    await sync_to_async(live.publish)([other_team.pk], live.event_body(live.CONNECTED))
    assert (await next_event(layer, theirs))["event"] == live.CONNECTED
