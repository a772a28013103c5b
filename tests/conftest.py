"""Fixtures shared by every test folder: the real host agent and the real stack."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.hostagent import HostAgentProcess, start_hostagent
from tests.support.stack import Stack, start_stack


@pytest.fixture(scope="session")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostAgentProcess]:
    """One real host agent (bubblewrap where installed) for in-process tests."""
    process = start_hostagent(tmp_path_factory.mktemp("agent"))
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Host agent + daphne subprocess on a fresh PostgreSQL database and the Redis channel layer."""
    running = start_stack(Path(tmp_path_factory.mktemp("stack")))
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="session")
def demo(stack: Stack) -> dict[str, Any]:
    """What `manage.py demo --json` printed on the stack."""
    return stack.demo()
