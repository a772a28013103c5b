"""The capsule lifecycle over the REST API on the real stack, as the curl examples of docs/api.md drive it."""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from websockets.asyncio.client import connect

from tests.support.polling import wait_until
from tests.support.stack import Stack
from tests.support.terminal import JSON_DIALECT, Terminal

pytestmark = [pytest.mark.timeout(180)]

Api = Callable[..., tuple[int, Any]]


@pytest.fixture
def api(stack: Stack, demo: dict[str, Any]) -> Api:
    def call(method: str, path: str, body: Any = None) -> tuple[int, Any]:
        request = urllib.request.Request(  # noqa: S310 - the local stack
            f"{stack.base_url}{path}",
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"X-API-Key": demo["api_key"], "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
                raw = response.read()
                return response.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    return call


@asynccontextmanager
async def terminal(stack: Stack, demo: dict[str, Any], capsule_id: str) -> AsyncIterator[Terminal]:
    url = f"{stack.ws_url()}/v1/capsules/{capsule_id}/pty"
    async with connect(
        url, subprotocols=JSON_DIALECT, additional_headers=[("X-API-Key", demo["api_key"])]
    ) as websocket:
        yield Terminal.over_websocket(websocket)


def wait_for_status(api: Api, capsule_id: str, status: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        code, capsule = api("GET", f"/v1/capsules/{capsule_id}")
        assert code == 200, capsule
        if capsule["status"] == status or time.monotonic() > deadline:
            assert capsule["status"] == status, capsule
            return dict(capsule)
        time.sleep(0.2)


async def test_create_use_pause_resume_destroy(api: Api, stack: Stack, demo: dict[str, Any]) -> None:
    code, capsule = api("POST", "/v1/capsules", {"timeout_sec": 0, "metadata": {"purpose": "it"}})
    assert code == 201, capsule
    assert capsule["status"] == "running"
    capsule_id = capsule["id"]

    async with terminal(stack, demo, capsule_id) as term:
        await term.start()
        # The pid comes back as "[1234]", which the echoed command line cannot contain.
        await term.type("sleep 600 & echo \"<$!>\" | tr '<>' '[]'\n")
        output = await term.read_until(b"]\r\n", timeout=30)
        pid = re.findall(rb"\[(\d+)\]\r\n", output)[-1].decode()

        code, paused = api("POST", f"/v1/capsules/{capsule_id}/pause")
        assert (code, paused["status"]) == (200, "paused")
        # A paused capsule takes no new terminal, and answers 409 to a second pause.
        async with terminal(stack, demo, capsule_id) as refused:
            assert await refused.recv() == {
                "type": "error",
                "data": "sandbox is not running (status: paused)",
                "fatal": True,
            }
        code, error = api("POST", f"/v1/capsules/{capsule_id}/pause")
        assert code == 409
        assert error["error"]["code"] == "invalid_state"

        # Typed while frozen, answered after resume: the same shell, the same sleep.
        await term.type(f"kill -0 {pid} && echo still-$((40+2))\n")
        code, resumed = api("POST", f"/v1/capsules/{capsule_id}/resume")
        assert (code, resumed["status"]) == (200, "running")
        await term.read_until(b"still-42", timeout=30)

        code, _ = api("DELETE", f"/v1/capsules/{capsule_id}")
        assert code == 204
        assert (await term.expect("exit"))["exit_code"] != 0
    assert wait_for_status(api, capsule_id, "stopped")["status"] == "stopped"
    async with terminal(stack, demo, capsule_id) as refused:
        assert (await refused.recv())["data"] == "sandbox is not running (status: stopped)"


async def test_a_killed_host_agent_makes_capsules_missing_until_it_returns(
    api: Api, stack: Stack, demo: dict[str, Any]
) -> None:
    code, capsule = api("POST", "/v1/capsules", {})
    assert code == 201, capsule
    capsule_id = capsule["id"]
    assert stack.agent is not None
    stack.agent.proc.kill()  # no goodbye: only the missing heartbeats tell
    stack.agent.proc.wait()
    try:
        wait_for_status(api, capsule_id, "missing")
        async with terminal(stack, demo, capsule_id) as refused:
            assert (await refused.recv())["data"] == "sandbox is not running (status: missing)"
    finally:
        stack.start_agent()
    wait_for_status(api, capsule_id, "running")
    async with terminal(stack, demo, capsule_id) as term:
        await term.start(cmd="/bin/echo", args=["back-again"])
        await term.read_until(b"back-again")


async def test_a_capsule_shows_its_hosts_isolation_and_its_out_of_memory_kills(
    api: Api, stack: Stack, demo: dict[str, Any]
) -> None:
    """Issue 10 end to end: the limit from the API holds in the capsule, the kill reaches the
    terminal as 137, and the agent's next heartbeat makes it an event on the capsule."""
    code, capsule = api("POST", "/v1/capsules", {"memory_mb": 128})
    assert code == 201, capsule
    capsule_id = capsule["id"]
    isolation = capsule["isolation"]
    assert {part: isolation[part]["on"] for part in ("network", "limits", "seccomp")} == {
        "network": True,
        "limits": True,
        "seccomp": True,
    }
    async with terminal(stack, demo, capsule_id) as term:
        await term.start(cmd="/usr/bin/python3", args=["-c", "x = bytearray(300 * 1024 * 1024)"])
        assert (await term.expect("exit", timeout=60))["exit_code"] == 137

    def oom_events() -> list[dict[str, Any]]:
        shown = api("GET", f"/v1/capsules/{capsule_id}")[1]
        return [event for event in shown["events"] if event["kind"] == "oom_kill"]

    await wait_until(lambda: bool(oom_events()), within=30)
    [kill] = oom_events()
    assert "memory limit 128 MiB" in kill["message"]
    assert api("DELETE", f"/v1/capsules/{capsule_id}")[0] == 204
