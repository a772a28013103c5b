"""Drives Wrenn's published Python SDK through the steps a test gives, as a user of its public API.

Run by an SDK virtualenv's python (``.venv-sdk-<version>/bin/python -I``, Makefile: sdk-venvs), from a
directory outside the repository: the SDK's package is named ``wrenn`` like the repository's settings
package. The SDK finds the server and the key where a user sets them, in WRENN_BASE_URL and
WRENN_API_KEY. stdin is one JSON object ``{"capsule_id": …, "steps": [{"op": …}, …]}``; stdout is one
JSON line per event the SDK yields and per step done, so a test that times out still shows how far
it got. Operations:

    start          capsule.pty(cmd=, args=, cols=, rows=), then the events up to ``started``
    connect        capsule.pty_connect(tag)
    write          session.write(base64-decoded data)
    resize, kill   session.resize(cols, rows), session.kill()
    read           events until base64 ``marker`` arrives in output after the previous marker, or
                   until an ``event`` of that type; a fatal error or an exit before either fails
    drop           the process ends without closing anything, as a crashed client's does
"""

from __future__ import annotations

import base64
import contextlib
import importlib
import importlib.metadata
import json
import os
import signal
import sys
from typing import Any

# Generous for a busy machine; short enough that a step that cannot end fails soon.
STEP_TIMEOUT = 30


class StepFailed(Exception):
    pass


def emit(**line: Any) -> None:
    print(json.dumps(line), flush=True)


class Driver:
    def __init__(self, capsule: Any, stack: contextlib.ExitStack) -> None:
        self.capsule = capsule
        self.stack = stack
        self.session: Any = None
        self.output = bytearray()
        self.cursor = 0  # where the next read_until looks for its marker

    def next_event(self) -> Any:
        if self.session is None:
            raise StepFailed("no session: start or connect first")
        try:
            event = next(self.session)
        except StopIteration:
            raise StepFailed("the SDK's event stream ended") from None
        kind = str(event.type.value)
        if kind == "output":
            data = event.data
            if isinstance(data, bytes):
                self.output += data
                emit(event=kind, data=base64.b64encode(data).decode())
            else:
                emit(event=kind, data=data)
        else:
            emit(
                event=kind,
                tag=event.tag,
                pid=event.pid,
                exit_code=event.exit_code,
                data=event.data if isinstance(event.data, str) else None,
                fatal=event.fatal,
            )
        return event

    def read_until(self, kinds: tuple[str, ...], marker: bytes) -> Any:
        while True:
            event = self.next_event()
            kind = str(event.type.value)
            if marker:
                found = self.output.find(marker, self.cursor)
                if found >= 0:
                    self.cursor = found + len(marker)
                    return event
            if kind in kinds:
                return event
            if kind == "exit" or (kind == "error" and event.fatal):
                raise StepFailed(f"{kind} before what the step waited for")

    def run(self, step: dict[str, Any]) -> None:
        op = step["op"]
        if op == "start":
            options = {name: step[name] for name in ("cmd", "args", "cols", "rows") if name in step}
            self.session = self.stack.enter_context(self.capsule.pty(**options))
            self.read_until(kinds=("started",), marker=b"")
            emit(op=op, tag=self.session.tag)
        elif op == "connect":
            self.session = self.stack.enter_context(self.capsule.pty_connect(step["tag"]))
            emit(op=op)
        elif op == "write":
            self.session.write(base64.b64decode(step["data"]))
            emit(op=op)
        elif op == "resize":
            self.session.resize(step["cols"], step["rows"])
            emit(op=op)
        elif op == "kill":
            self.session.kill()
            emit(op=op)
        elif op == "read":
            marker = base64.b64decode(step.get("marker", ""))
            self.read_until(kinds=(step["event"],) if "event" in step else (), marker=marker)
            emit(op=op)
        elif op == "drop":
            emit(op=op)
            os._exit(0)
        else:
            raise StepFailed(f"unknown op {op!r}")


def on_alarm(signum: int, frame: Any) -> None:
    raise TimeoutError


def main() -> int:
    plan = json.load(sys.stdin)
    # Imported by name: mypy, run over the repository, would check this against its own `wrenn`.
    sdk: Any = importlib.import_module("wrenn")
    if not hasattr(sdk, "Capsule"):
        emit(failed=f"`import wrenn` found {sdk.__file__}, not the SDK: run with the SDK's python -I")
        return 2
    emit(sdk=importlib.metadata.version("wrenn"))
    signal.signal(signal.SIGALRM, on_alarm)
    with contextlib.ExitStack() as stack:
        try:
            capsule = sdk.Capsule.connect(plan["capsule_id"])
        except sdk.WrennError as exc:
            emit(failed=f"Capsule.connect: {type(exc).__name__}: {exc}")
            return 1
        driver = Driver(capsule, stack)
        for number, step in enumerate(plan["steps"]):
            timeout = int(step.get("timeout", STEP_TIMEOUT))
            signal.alarm(timeout)
            try:
                driver.run(step)
            except StepFailed as exc:
                emit(failed=f"step {number} {step['op']}: {exc}")
                return 1
            except TimeoutError:
                emit(failed=f"step {number} {step['op']}: nothing it waited for within {timeout} s")
                return 1
            finally:
                signal.alarm(0)
    emit(done=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
