"""Drives Wrenn's published SDK (0.3.0) through the event stream and the metrics calls, as a user of
its public API: opens `events.stream()`, then creates a capsule, reads its metrics until they have
a point, pauses, resumes and destroys it, reads the team's stats and usage, and reports each event
the stream yielded.

Run by the SDK virtualenv's python (``.venv-sdk-0.3.0/bin/python -I``) from outside the repository,
like tests/sdk/driver.py, with WRENN_BASE_URL and WRENN_API_KEY set. stdout is one JSON line per
event and per result, so a test that times out still shows how far it got; the last line is
``{"done": true}`` or ``{"failed": …}``.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import signal
import sys
import time
from collections.abc import Iterator
from typing import Any

# Generous for a busy machine; short enough that a step that cannot end fails soon.
STEP_TIMEOUT = 30
# Between reads of the metrics while they have no point yet.
POLL = 0.2


def emit(**line: Any) -> None:
    print(json.dumps(line, default=str), flush=True)


def on_alarm(signum: int, frame: Any) -> None:
    raise TimeoutError


class Events:
    """The stream's events, each reported as it is read."""

    def __init__(self, stream: Iterator[Any]) -> None:
        self.stream = stream

    def until(self, kind: str, sandbox_id: str | None = None) -> Any:
        """Events up to the first of `kind` (about `sandbox_id`, when given)."""
        signal.alarm(STEP_TIMEOUT)
        try:
            for event in self.stream:
                resource = event.resource.id if event.resource else None
                emit(
                    event=str(event.event.value),
                    outcome=event.outcome.value if event.outcome else None,
                    resource=resource,
                    actor=event.actor.type.value if event.actor and event.actor.type else None,
                    status=event.sandbox.status.value if event.sandbox and event.sandbox.status else None,
                    metadata=event.metadata,
                )
                if str(event.event.value) == kind and (sandbox_id is None or resource == sandbox_id):
                    return event
        finally:
            signal.alarm(0)
        raise RuntimeError("the event stream ended")


def step(name: str, call: Any) -> Any:
    signal.alarm(STEP_TIMEOUT)
    try:
        return call()
    finally:
        signal.alarm(0)


def main() -> int:
    # Imported by name: mypy, run over the repository, would check this against its own `wrenn`.
    sdk: Any = importlib.import_module("wrenn")
    if not hasattr(sdk, "WrennClient"):
        emit(failed=f"`import wrenn` found {sdk.__file__}, not the SDK: run with the SDK's python -I")
        return 2
    emit(sdk=importlib.metadata.version("wrenn"))
    signal.signal(signal.SIGALRM, on_alarm)
    client = sdk.WrennClient()
    try:
        events = Events(client.events.stream())
        events.until("connected")
        capsule = step("create", client.capsules.create)
        events.until("capsule.create", capsule.id)
        signal.alarm(STEP_TIMEOUT)
        try:
            while not (metrics := client.capsules.metrics(capsule.id, range="5m")).points:
                time.sleep(POLL)
        finally:
            signal.alarm(0)
        point = metrics.points[-1]
        emit(
            metrics={
                "sandbox_id": metrics.sandbox_id,
                "range": metrics.range.value,
                "points": len(metrics.points),
                "last": point.model_dump(),
            }
        )
        step("pause", lambda: client.capsules.pause(capsule.id))
        events.until("capsule.pause", capsule.id)
        step("resume", lambda: client.capsules.resume(capsule.id))
        events.until("capsule.resume", capsule.id)
        stats = step("stats", lambda: client.capsules.stats(range="5m"))
        emit(
            stats={
                "range": stats.range.value,
                "current": stats.current.model_dump(),
                "labels": len(stats.series.labels),
            }
        )
        usage = step("usage", client.capsules.usage)
        emit(usage={"from": str(usage.from_), "to": str(usage.to), "points": len(usage.points)})
        step("destroy", lambda: client.capsules.destroy(capsule.id))
        events.until("capsule.destroy", capsule.id)
    except TimeoutError:
        emit(failed=f"nothing it waited for within {STEP_TIMEOUT} s")
        return 1
    except Exception as exc:  # the SDK's own errors, reported for the test to show
        emit(failed=f"{type(exc).__name__}: {exc}")
        return 1
    finally:
        client.close()
    emit(done=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
