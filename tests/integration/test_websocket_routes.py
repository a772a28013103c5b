"""A WebSocket path that no route serves is refused at the handshake with 404, by real daphne,
and leaves no traceback in its log (Channels' router used to raise, which daphne answers 500)."""

from __future__ import annotations

from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.support.polling import wait_until
from tests.support.stack import Stack

pytestmark = [pytest.mark.timeout(120)]

UNROUTED = [
    "/nope",
    "/v1/capsules",
    "/v1/capsules/cl-abc/pty/extra",
    "/api/v2/capsules/cl-abc/pty",
    "/v1/admin/capsules//pty",
]


def daphne_log(stack: Stack) -> Path:
    return stack.data_dir / f"daphne-{stack.workers[0][0]}.log"


@pytest.mark.parametrize("path", UNROUTED)
async def test_an_unrouted_path_is_refused_with_404_and_no_traceback(stack: Stack, path: str) -> None:
    log = daphne_log(stack)
    start = log.stat().st_size
    with pytest.raises(InvalidStatus) as caught:
        async with connect(stack.ws_url() + path, open_timeout=20):
            pass
    assert caught.value.response.status_code == 404
    assert caught.value.response.reason_phrase == "Not Found"

    def written() -> str:
        with log.open("rb") as file:
            file.seek(start)
            return file.read().decode(errors="replace")

    # daphne's access log records the refusal; a traceback would have been written before it.
    await wait_until(lambda: f"WSREJECT {path}" in written())
    assert "Traceback" not in written()
    assert "No route found" not in written()


async def test_a_routed_path_still_opens(stack: Stack, demo: dict[str, str]) -> None:
    url = f"{stack.ws_url()}/api/v1/capsules/{demo['capsule_id']}/pty"
    async with connect(
        url, additional_headers=[("X-API-Key", demo["api_key"])], open_timeout=20
    ) as websocket:
        assert websocket.response is not None
        assert websocket.response.status_code == 101
