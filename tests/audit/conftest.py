"""Fixtures for the audit tests: a host row for the session's real host agent, and one nobody answers."""

import pytest

from capsules.models import Host
from tests.support.hostagent import HostAgentProcess, free_port


@pytest.fixture
def agent_host(agent: HostAgentProcess, db: None) -> Host:
    return Host.objects.create(address=agent.address)


@pytest.fixture
def dead_host(db: None) -> Host:
    return Host.objects.create(address=f"127.0.0.1:{free_port()}")
