"""The sign-in limits hold across daphne workers: two real workers share their counts in Redis
(the Django cache, with REDIS_URL), so spreading attempts over workers gains nothing."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.stack import Stack, running_stack

pytestmark = [pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = {"WRENN_LOGIN_RATE": "3/hour", "WRENN_LOGIN_ADDRESS_RATE": "100/hour"}
    with running_stack(Path(tmp_path_factory.mktemp("limits")), workers=2, env=env) as stack:
        yield stack


def sign_in(
    stack: Stack, worker: int, username: str, password: str
) -> tuple[int, dict[str, Any], str | None]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{stack.workers[worker][0]}/v1/auth/token",
        data=json.dumps({"username": username, "password": password}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=20) as response:  # noqa: S310 - a local test URL
            return response.status, json.loads(response.read()), response.headers.get("Retry-After")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), exc.headers.get("Retry-After")


def test_attempts_on_every_worker_count_together(two_workers: Stack) -> None:
    demo = two_workers.demo()
    user, password = demo["username"], demo["password"]
    assert sign_in(two_workers, 0, user, "wrong")[0] == 401
    assert sign_in(two_workers, 1, user, password)[0] == 200  # within the limit
    assert sign_in(two_workers, 0, user, "wrong")[0] == 401
    status, body, retry_after = sign_in(two_workers, 1, user, password)
    assert status == 429
    assert retry_after is not None
    assert 1 <= int(retry_after) <= 3600
    assert body == {
        "error": {
            "code": "rate_limited",
            "message": f"too many sign-in attempts for this account; try again in {retry_after} seconds",
        }
    }
    assert sign_in(two_workers, 0, user, password)[0] == 429
    # Another account is not affected.
    assert sign_in(two_workers, 0, "nobody", "wrong")[0] == 401
