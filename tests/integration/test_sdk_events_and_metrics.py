"""Wrenn's published SDK 0.3.0 against the stack (daphne with Redis, a host agent heartbeating, the
monitor): its `events.stream()` says `connected`, then sees the capsule it creates, pauses, resumes
and destroys; its `capsules.metrics`, `capsules.stats` and `capsules.usage` parse what the API
answers (tests/sdk/events_driver.py drives it)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support.hostagent import REPO_ROOT
from tests.support.sdk import sdk_python
from tests.support.stack import Stack

pytestmark = [pytest.mark.stack, pytest.mark.timeout(240)]

DRIVER = REPO_ROOT / "tests" / "sdk" / "events_driver.py"
RUN_TIMEOUT = 200.0


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
