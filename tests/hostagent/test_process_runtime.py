"""The plain-process runtime (development only): home, user and environment."""

from __future__ import annotations

import getpass
from typing import Any

import pytest

from tests.hostagent.conftest import capsule_dir
from tests.support.hostagent import HostAgentProcess, start_terminal

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def agent(agent_for_runtime: Any) -> HostAgentProcess:
    """Only the process runtime in this module."""
    agent: HostAgentProcess = agent_for_runtime("process")
    return agent


async def test_home_and_cwd_are_the_capsule_home(stub: Any, agent: HostAgentProcess, capsule: str) -> None:
    terminal, _ = await start_terminal(stub, capsule, "/bin/sh", "-c", 'echo "$HOME"; pwd')
    await terminal.wait_exit()
    home = str(capsule_dir(agent, capsule) / "home")
    assert terminal.output.decode().split() == [home, home]


async def test_default_user_is_the_agents_own(stub: Any, capsule: str) -> None:
    terminal, _ = await start_terminal(stub, capsule, "/bin/sh", "-c", "id -un")
    await terminal.wait_exit()
    assert terminal.output.decode().split() == [getpass.getuser()]


async def test_started_pid_is_the_host_pid_of_the_process(stub: Any, capsule: str) -> None:
    terminal, started = await start_terminal(stub, capsule, "/bin/sh", "-c", "echo pid=$$")
    await terminal.wait_exit()
    assert f"pid={started.pid}".encode() in terminal.output
