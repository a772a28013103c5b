"""Events and metrics on the real stack (daphne with Redis, a host agent heartbeating, the monitor).

Wrenn's published SDK 0.3.0: its `events.stream()` says `connected`, then sees the capsule it
creates, pauses, resumes and destroys; its `capsules.metrics`, `capsules.stats` and
`capsules.usage` parse what the API answers (tests/sdk/events_driver.py drives it). And across
processes: a stream on one daphne worker sees a pause made through another, and the host going
down and up as the monitor and the heartbeats find it."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.hostagent import REPO_ROOT
from tests.support.sdk import sdk_python
from tests.support.stack import Stack, running_stack

pytestmark = [pytest.mark.stack, pytest.mark.timeout(240)]

DRIVER = REPO_ROOT / "tests" / "sdk" / "events_driver.py"
RUN_TIMEOUT = 200.0
# Against hangs only: a read that waits this long has failed.
WAIT = 30.0


def run_driver(stack: Stack, demo: dict[str, Any], workdir: Path) -> list[dict[str, Any]]:
    env = {
        "PATH": os.environ["PATH"],
        "WRENN_BASE_URL": f"{stack.base_url}/api",
        "WRENN_API_KEY": demo["api_key"],
    }
    result = subprocess.run(
        [str(sdk_python("0.3.0")), "-I", str(DRIVER)],
        cwd=workdir,
        env=env,
        capture_output=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    lines = [json.loads(line) for line in result.stdout.decode().splitlines() if line.strip()]
    report = (
        "\n".join(json.dumps(line) for line in lines) + "\n" + result.stderr.decode(errors="replace")[-3000:]
    )
    assert result.returncode == 0, report
    assert lines[-1] == {"done": True}, report
    return lines


def test_the_sdk_streams_the_lifecycle_and_parses_metrics_stats_and_usage(
    stack: Stack, demo: dict[str, Any], tmp_path: Path
) -> None:
    lines = run_driver(stack, demo, tmp_path)
    assert lines[0] == {"sdk": "0.3.0"}
    events = [line for line in lines if "event" in line]
    assert events[0]["event"] == "connected"
    [created] = [e for e in events if e["event"] == "capsule.create"]
    capsule_id = created["resource"]
    ours = [e for e in events if e["resource"] == capsule_id]
    assert [(e["event"], e["outcome"], e["actor"], e["status"]) for e in ours] == [
        ("capsule.create", "success", "api_key", "running"),
        ("capsule.pause", "success", "api_key", "paused"),
        ("capsule.resume", "success", "api_key", "running"),
        ("capsule.destroy", "success", "api_key", "stopped"),
    ]
    [metrics] = [line["metrics"] for line in lines if "metrics" in line]
    assert (metrics["sandbox_id"], metrics["range"]) == (capsule_id, "5m")
    assert metrics["points"] >= 1
    assert set(metrics["last"]) == {"timestamp_unix", "cpu_pct", "mem_bytes", "disk_bytes"}
    [stats] = [line["stats"] for line in lines if "stats" in line]
    assert stats["range"] == "5m"
    assert stats["current"]["running_count"] >= 1
    assert stats["labels"] >= 1
    [usage] = [line["usage"] for line in lines if "usage" in line]
    assert usage["points"] == 30


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(Path(tmp_path_factory.mktemp("events")), workers=2) as stack:
        yield stack


class EventStream:
    """`GET /v1/events/stream` on one worker, read event by event with the standard library."""

    def __init__(self, port: int, api_key: str) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT)
        self.connection.request("GET", "/v1/events/stream", headers={"X-API-Key": api_key})
        self.response = self.connection.getresponse()
        assert self.response.status == 200, self.response.read()

    def next_event(self) -> dict[str, Any]:
        data = None
        while True:
            line = self.response.readline().decode()
            assert line, "the stream ended"
            if line.startswith("data: "):
                data = json.loads(line.removeprefix("data: "))
            elif line == "\n" and data is not None:
                return data

    def until(self, kind: str, resource: str | None = None) -> dict[str, Any]:
        """The next event of `kind` (about `resource`, when given)."""
        while True:
            event = self.next_event()
            if event["event"] == kind and resource in (None, event.get("resource", {}).get("id")):
                return event


def call(port: int, api_key: str, method: str, path: str) -> dict[str, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        method=method,
        headers={"X-API-Key": api_key},
        data=b"" if method == "POST" else None,
    )
    with urllib.request.urlopen(request, timeout=WAIT) as response:  # noqa: S310 - as above
        body: dict[str, Any] = json.loads(response.read() or b"{}")
        return body


def test_a_stream_sees_changes_made_by_other_processes(two_workers: Stack) -> None:
    demo = two_workers.demo()
    key, capsule_id = demo["api_key"], demo["capsule_id"]
    (first, _), (second, _) = two_workers.workers
    stream = EventStream(second, key)
    assert stream.next_event()["event"] == "connected"
    # A pause through the other worker.
    call(first, key, "POST", f"/v1/capsules/{capsule_id}/pause")
    paused = stream.until("capsule.pause", capsule_id)
    assert (paused["outcome"], paused["sandbox"]["status"]) == ("success", "paused")
    # The host going quiet, as the monitor finds it; and back, as its heartbeats say.
    assert two_workers.agent is not None
    two_workers.agent.stop()
    down = stream.until("host.down")
    assert (down["resource"]["type"], down["actor"]) == ("host", {"type": "system"})
    lost = stream.until("capsule.state.changed", capsule_id)
    assert lost["metadata"] == {"from": "paused", "to": "missing", "reason": "host_failure"}
    two_workers.start_agent()
    back = stream.until("capsule.state.changed", capsule_id)
    assert back["metadata"] == {"from": "missing", "to": "paused", "reason": "host_back"}
    assert stream.until("host.up", down["resource"]["id"])["metadata"] == {"status": "online"}
    stream.connection.close()
