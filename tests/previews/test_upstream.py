"""What a caller is told when the capsule's host agent cannot be reached: the project's words."""

from __future__ import annotations

import pytest

from capsules.agents import HOST_UNREACHABLE
from previews.access import Denied
from previews.upstream import Upstream
from tests.support.hostagent import free_port

pytestmark = pytest.mark.timeout(60)


async def test_an_agent_that_does_not_answer_is_503_host_unavailable() -> None:
    with pytest.raises(Denied) as denied:
        await Upstream.connect(f"127.0.0.1:{free_port()}", "cl-x", 3000)
    assert (denied.value.status, denied.value.code, denied.value.message) == (
        503,
        "host_unavailable",
        HOST_UNREACHABLE,
    )
