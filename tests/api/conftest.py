"""Domain fixtures for the API: teams, a member, an API key, a real host agent's host, a capsule on it,
and clients whose every response is checked against the OpenAPI document."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from capsules.actions import ActionError, create_capsule, destroy_capsule
from capsules.keys import create_api_key
from capsules.models import Host, Membership, Sandbox, Team
from capsules.tokens import tokens_for
from tests.api.contract import SCHEMA_PATH, Contract, ContractClient
from tests.capsules import MEMBER_PASSWORD
from tests.support.hostagent import HostAgentProcess


@pytest.fixture(scope="session")
def openapi() -> dict[str, Any]:
    """The document as served, parsed."""
    response = Client().get(SCHEMA_PATH)
    assert response.status_code == 200, response.content[:500]
    document: dict[str, Any] = json.loads(response.content)
    return document


@pytest.fixture(scope="session")
def contract(openapi: dict[str, Any]) -> Contract:
    return Contract(openapi)


# team, other_team and api_key come from tests/conftest.py; here the member owns its team.


@pytest.fixture
def member(team: Team) -> Any:
    user = get_user_model().objects.create_user(
        username="alice", email="alice@example.com", password=MEMBER_PASSWORD
    )
    Membership.objects.create(user=user, team=team, role=Membership.Role.OWNER)
    return user


@pytest.fixture
def other_api_key(other_team: Team) -> str:
    _, raw_key = create_api_key(other_team, "theirs")
    return raw_key


@pytest.fixture
def host(agent: HostAgentProcess, db: None) -> Iterator[Host]:
    """The session's real host agent; what a test started there is destroyed after it."""
    host = Host.objects.create(address=agent.address)
    yield host
    Host.objects.filter(pk=host.pk).update(status=Host.Status.ONLINE)
    for sandbox in Sandbox.objects.filter(host=host).exclude(status=Sandbox.Status.STOPPED):
        with contextlib.suppress(ActionError):
            destroy_capsule(sandbox)


@pytest.fixture
def capsule(team: Team, host: Host) -> Sandbox:
    """A running capsule created through the action, so that it exists on the real agent."""
    return create_capsule(team)


@pytest.fixture
def other_capsule(other_team: Team, host: Host) -> Sandbox:
    """Another team's capsule (a row only: no request for it may ever reach the agent)."""
    return Sandbox.objects.create(
        team=other_team, host=host, status=Sandbox.Status.RUNNING, started_at=timezone.now()
    )


@pytest.fixture
def client(contract: Contract) -> ContractClient:
    """No credentials."""
    return ContractClient(contract)


@pytest.fixture
def key_client(contract: Contract, api_key: str) -> ContractClient:
    """The team's API key, as Wrenn's SDKs send it."""
    return ContractClient(contract, HTTP_X_API_KEY=api_key)


@pytest.fixture
def jwt_client(contract: Contract, member: Any, team: Team) -> ContractClient:
    """The member's access token for the team."""
    access = tokens_for(member, team)["access"]
    return ContractClient(contract, HTTP_AUTHORIZATION=f"Bearer {access}")


@pytest.fixture(params=["api_key", "jwt"])
def team_client(request: pytest.FixtureRequest) -> ContractClient:
    """Each way of calling for the team, in turn."""
    client: ContractClient = request.getfixturevalue(
        "key_client" if request.param == "api_key" else "jwt_client"
    )
    return client
