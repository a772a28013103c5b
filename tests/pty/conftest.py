"""Fixtures for terminal-socket tests through the real ASGI application and a real host agent.

The consumer reads the database from worker threads, so rows must be committed:
these fixtures use ``transactional_db``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.utils import timezone

from capsules.keys import create_api_key
from capsules.models import Host, Membership, Sandbox, Team
from protos import hostagent_pb2 as pb
from protos import hostagent_pb2_grpc as pb_grpc
from pty.dialects import JSON_SUBPROTOCOL
from tests.support.hostagent import HostAgentProcess
from wrenn.asgi import application

Open = Callable[..., Any]


@pytest.fixture
def team(transactional_db: None) -> Team:
    return Team.objects.create(name="Acme", slug="acme")


@pytest.fixture
def other_team(transactional_db: None) -> Team:
    return Team.objects.create(name="Globex", slug="globex")


@pytest.fixture
def member(team: Team) -> Any:
    user = get_user_model().objects.create_user(username="alice", password="alice-password-1")
    Membership.objects.create(user=user, team=team, role=Membership.Role.MEMBER)
    return user


@pytest.fixture
def api_key(team: Team) -> str:
    return create_api_key(team, "tests")[1]


@pytest.fixture
def host(transactional_db: None, agent: HostAgentProcess) -> Host:
    return Host.objects.create(address=agent.address)


def create_on_agent(address: str, sandbox_id: str) -> None:
    with grpc.insecure_channel(address) as channel:
        pb_grpc.HostAgentStub(channel).CreateSandbox(
            pb.CreateSandboxRequest(sandbox_id=sandbox_id), timeout=10
        )


@pytest.fixture
def capsule(team: Team, host: Host) -> Sandbox:
    sandbox = Sandbox.objects.create(team=team, host=host, status="running", started_at=timezone.now())
    create_on_agent(host.address, sandbox.id)
    return sandbox


@pytest.fixture
def other_capsule(other_team: Team, host: Host) -> Sandbox:
    sandbox = Sandbox.objects.create(team=other_team, host=host, status="running", started_at=timezone.now())
    create_on_agent(host.address, sandbox.id)
    return sandbox


@pytest.fixture
async def open_socket(transactional_db: None) -> AsyncIterator[Open]:
    """Opens sockets on the real ASGI application; closes whatever the test left open.

    Closing a socket records activity in the database, so this depends on the
    database fixture and is torn down before it.
    """
    opened: list[WebsocketCommunicator] = []

    async def open_(
        path: str, headers: list[tuple[bytes, bytes]] | None = None, subprotocols: list[str] | None = None
    ) -> WebsocketCommunicator:
        # The JSON dialect with extensions unless a test says otherwise ([]: a reference client).
        communicator = WebsocketCommunicator(
            application,
            path,
            headers=headers or [],
            subprotocols=[JSON_SUBPROTOCOL] if subprotocols is None else subprotocols,
        )
        connected, subprotocol = await communicator.connect(timeout=10)
        assert connected
        communicator.accepted_subprotocol = subprotocol
        opened.append(communicator)
        return communicator

    yield open_
    for communicator in opened:
        if not communicator.future.done():
            await communicator.disconnect(timeout=10)
