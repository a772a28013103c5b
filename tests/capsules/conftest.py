"""Domain fixtures for the capsules app: teams, a member, an API key, a host and a capsule."""

from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from capsules.keys import create_api_key
from capsules.models import Host, Membership, Sandbox, Team
from tests.capsules import MEMBER_PASSWORD
from tests.support.hostagent import HostAgentProcess, free_port


@pytest.fixture
def team(db: None) -> Team:
    return Team.objects.create(name="Acme", slug="acme")


@pytest.fixture
def other_team(db: None) -> Team:
    return Team.objects.create(name="Globex", slug="globex")


@pytest.fixture
def member(team: Team) -> Any:
    user = get_user_model().objects.create_user(
        username="alice", email="alice@example.com", password=MEMBER_PASSWORD
    )
    Membership.objects.create(user=user, team=team, role=Membership.Role.MEMBER)
    return user


@pytest.fixture
def api_key(team: Team, member: Any) -> str:
    _, raw_key = create_api_key(team, "ci", created_by=member)
    return raw_key


@pytest.fixture
def host(db: None) -> Host:
    return Host.objects.create(address="127.0.0.1:50071")


@pytest.fixture
def capsule(team: Team, host: Host) -> Sandbox:
    return Sandbox.objects.create(
        team=team, host=host, status=Sandbox.Status.RUNNING, started_at=timezone.now()
    )


@pytest.fixture
def agent_host(agent: HostAgentProcess, db: None) -> Host:
    """A host row for the session's real host agent."""
    return Host.objects.create(address=agent.address)


@pytest.fixture
def dead_host(db: None) -> Host:
    """A host row whose address nobody listens on: every call to it is UNAVAILABLE."""
    return Host.objects.create(address=f"127.0.0.1:{free_port()}")
