"""Domain fixtures for the capsules app: a host and a capsule (teams, member and key: tests/conftest.py)."""

import pytest
from django.utils import timezone

from capsules.models import Host, Sandbox, Team
from tests.support.hostagent import HostAgentProcess, free_port


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
