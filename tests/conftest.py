"""Fixtures shared by every test folder: teams, a member and a key, the real host agent and the real stack;
and each test's lane (tests/support/lanes.py).

Folders whose tests need committed rows (tests/pty) override the domain fixtures with
``transactional_db`` versions.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from hypothesis import settings as hypothesis_settings

from capsules.keys import create_api_key
from capsules.models import Membership, Team
from tests.capsules import MEMBER_PASSWORD
from tests.support import lanes
from tests.support.hostagent import HostAgentProcess, release_network_resources, start_hostagent
from tests.support.stack import Stack, running_stack

_own_basetemp = pytest.StashKey[Path]()

# Property tests (Hypothesis): the same examples on every run, so that a failure anybody sees is one
# anybody reproduces; no deadline (a test that passes only on a fast machine is a defect); no example
# database written into the work tree. WRENN_HYPOTHESIS_PROFILE=explore draws fresh, and more,
# examples for a hunt by hand; what it finds belongs in the test as an @example.
hypothesis_settings.register_profile("wrenn", derandomize=True, deadline=None, database=None)
hypothesis_settings.register_profile("explore", deadline=None, database=None, max_examples=5000)
hypothesis_settings.load_profile(os.environ.get("WRENN_HYPOTHESIS_PROFILE", "wrenn"))


@pytest.hookimpl(tryfirst=True)  # before pytest reads the temporary directory's root
def pytest_configure(config: pytest.Config) -> None:
    lanes.configure(config)
    if config.option.basetemp is None and os.geteuid() == 0:
        # As root, bubblewrap capsules run as an unprivileged uid that must traverse to each
        # agent's data dir (tests/support/hostagent.py opens the way), but every pytest session
        # that starts on the machine sets /tmp/pytest-of-root back to 0700, and capsules of a
        # session already running then fail with "Permission denied". A directory of this run's own.
        basetemp = Path(tempfile.mkdtemp(prefix="wrenn-pytest-"))
        config.option.basetemp = config.stash[_own_basetemp] = basetemp


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """This run's own temporary directory goes when everything passed, and stays for a look otherwise."""
    release_network_resources()
    basetemp = session.config.stash.get(_own_basetemp, None)
    if basetemp is not None and exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        shutil.rmtree(basetemp, ignore_errors=True)


@pytest.hookimpl(tryfirst=True)  # before `-m` selects by the marks it gives
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    lanes.assign(items)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, object, object]:
    return (yield from lanes.runtest_protocol(item))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    return (yield from lanes.runtest_makereport(item, call))


@pytest.fixture(scope="session", autouse=True)
def _one_database_connection_per_call() -> None:
    """In-process consumers reach the database from worker threads; a connection they kept
    (WRENN_DB_CONN_MAX_AGE) would keep the test database from being dropped at the end.
    Every thread's connection reads this same dictionary when it connects."""
    settings.DATABASES["default"]["CONN_MAX_AGE"] = 0


@pytest.fixture(scope="session", autouse=True)
def _cheap_password_hashes() -> None:
    """Django's default hasher takes about 0.3 s a password here, by design, and most tests sign a
    member up or in: tests hash with MD5 (the speed-up Django's testing docs suggest). Processes the
    tests start (the stack, `manage.py`) keep the settings' hasher."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _own_cache(settings: Any) -> None:
    """Each test gets an empty in-memory cache of its own: the sign-in limits count there
    (capsules/ratelimit.py), and one test's attempts must not count against the next one's."""
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": uuid.uuid4().hex}
    }


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
    with running_stack(Path(tmp_path_factory.mktemp("stack"))) as running:
        yield running


@pytest.fixture(scope="session")
def demo(stack: Stack) -> dict[str, Any]:
    """What `manage.py demo --json` printed on the stack."""
    return stack.demo()


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
