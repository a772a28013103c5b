"""Wrenn's published Python SDKs as test clients: each version in a virtualenv of its own (Makefile:
sdk-venvs), driven by tests/sdk/driver.py through the SDK's public API, outside this repository's
import path (the SDK's package and this repository's settings package are both named `wrenn`)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .hostagent import REPO_ROOT

SDK_VERSIONS = ("0.2.0", "0.3.0")
DRIVER = REPO_ROOT / "tests" / "sdk" / "driver.py"
SCRIPT = REPO_ROOT / "tests" / "sdk" / "script.py"
# A whole run; each step of the driver has its own, shorter bound (driver.py: STEP_TIMEOUT).
RUN_TIMEOUT = 150.0
BUILD_TIMEOUT = 900


def sdk_python(version: str) -> Path:
    """The SDK virtualenv's python, built (or brought up to date) by its make target."""
    target = f".venv-sdk-{version}/.installed"
    try:
        result = subprocess.run(
            ["make", "--no-print-directory", target],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.fail(f"could not build the SDK {version} virtualenv: `make {target}` failed: {exc}")
    if result.returncode != 0:
        pytest.fail(
            f"could not build the SDK {version} virtualenv: `make {target}` exited with "
            f"{result.returncode}:\n{result.stdout}{result.stderr}"
        )
    return REPO_ROOT / f".venv-sdk-{version}" / "bin" / "python"


# --- the steps driver.py performs ---------------------------------------------


def _b64(data: str | bytes) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def start(**options: Any) -> dict[str, Any]:
    """``capsule.pty(**options)`` and its events up to ``started``."""
    return {"op": "start", **options}


def connect(tag: str) -> dict[str, Any]:
    return {"op": "connect", "tag": tag}


def write(data: str | bytes) -> dict[str, Any]:
    return {"op": "write", "data": _b64(data)}


def resize(cols: int, rows: int) -> dict[str, Any]:
    return {"op": "resize", "cols": cols, "rows": rows}


def kill() -> dict[str, Any]:
    return {"op": "kill"}


def read_until(marker: str | bytes) -> dict[str, Any]:
    """Events until ``marker`` arrives in output after the previous marker."""
    return {"op": "read", "marker": _b64(marker)}


def read_until_event(kind: str) -> dict[str, Any]:
    return {"op": "read", "event": kind}


def drop() -> dict[str, Any]:
    """The driver ends without closing its socket or killing its session, as a crashed client."""
    return {"op": "drop"}


# --- what the SDK reported ----------------------------------------------------


@dataclass
class SdkRun:
    version: str
    returncode: int
    lines: list[dict[str, Any]]
    stderr: str

    def __str__(self) -> str:
        """Every line but the output events, which are counted instead."""
        shown, outputs = [], 0
        for line in self.lines:
            if line.get("event") == "output":
                outputs += 1
                continue
            if outputs:
                shown.append(f"({outputs} output events)")
                outputs = 0
            shown.append(json.dumps(line)[:300])
        if outputs:
            shown.append(f"({outputs} output events)")
        listing = "\n".join(shown[-60:])
        return f"SDK {self.version} driver exited with {self.returncode}:\n{listing}\n{self.stderr[-3000:]}"

    @property
    def events(self) -> list[dict[str, Any]]:
        return [line for line in self.lines if "event" in line]

    @property
    def output(self) -> bytes:
        """Every byte the SDK's output events carried, in order."""
        return b"".join(
            base64.b64decode(event["data"])
            for event in self.events
            if event["event"] == "output" and event["data"] is not None
        )

    @property
    def errors(self) -> list[dict[str, Any]]:
        return [event for event in self.events if event["event"] == "error"]

    @property
    def exit_codes(self) -> list[int]:
        return [event["exit_code"] for event in self.events if event["event"] == "exit"]

    @property
    def tag(self) -> str:
        return next(event["tag"] for event in self.events if event["event"] == "started")

    @property
    def failure(self) -> str | None:
        return next((line["failed"] for line in self.lines if "failed" in line), None)

    def check(self) -> SdkRun:
        """Fails unless the driver did every step (the last may be a drop) with this SDK version,
        and every event it saw
        is one the reference sends: an SDK turns a frame type it does not know into an error
        event ("unknown msg_type"), and an output frame of the other dialect into an output
        event without data."""
        assert self.returncode == 0, str(self)
        assert self.lines[-1:] in ([{"done": True}], [{"op": "drop"}]), str(self)
        assert self.lines[0] == {"sdk": self.version}, str(self)
        unknown = [error for error in self.errors if str(error["data"]).startswith("unknown msg_type")]
        assert unknown == [], str(self)
        blank = [event for event in self.events if event["event"] == "output" and event["data"] is None]
        assert blank == [], f"{len(blank)} output events without data: {self}"
        return self


@dataclass
class Sdk:
    """One SDK version, configured as its users configure it (WRENN_BASE_URL, WRENN_API_KEY), for
    one capsule."""

    version: str
    python: Path
    base_url: str
    api_key: str
    capsule_id: str
    workdir: Path  # the driver's cwd: outside the repository, so `import wrenn` finds the SDK

    def _command(self) -> list[str]:
        # -I: no PYTHON* variables, no script directory and no user site on sys.path.
        return [str(self.python), "-I", str(DRIVER)]

    def _env(self) -> dict[str, str]:
        # Only what the SDK reads: no proxy settings, no PYTHONPATH.
        return {"PATH": os.environ["PATH"], "WRENN_BASE_URL": self.base_url, "WRENN_API_KEY": self.api_key}

    def _plan(self, steps: list[dict[str, Any]]) -> bytes:
        return json.dumps({"capsule_id": self.capsule_id, "steps": steps}).encode()

    def _result(self, returncode: int, stdout: bytes, stderr: bytes) -> SdkRun:
        lines = [json.loads(line) for line in stdout.decode().splitlines() if line.strip()]
        return SdkRun(self.version, returncode, lines, stderr.decode(errors="replace"))

    def run(self, *steps: dict[str, Any]) -> SdkRun:
        try:
            result = subprocess.run(
                self._command(),
                cwd=self.workdir,
                env=self._env(),
                input=self._plan(list(steps)),
                capture_output=True,
                timeout=RUN_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            partial = self._result(-1, exc.stdout or b"", exc.stderr or b"")
            raise AssertionError(f"no end within {RUN_TIMEOUT} s: {partial}") from None
        return self._result(result.returncode, result.stdout, result.stderr)

    def script(self, code: str, expect_failure: bool = False) -> list[dict[str, Any]]:
        """Run `code` with the SDK (tests/sdk/script.py); its emitted lines, the last `done`
        (or, with `expect_failure`, `failed`)."""
        plan = json.dumps({"capsule_id": self.capsule_id, "code": code}).encode()
        try:
            result = subprocess.run(
                [str(self.python), "-I", str(SCRIPT)],
                cwd=self.workdir,
                env=self._env(),
                input=plan,
                capture_output=True,
                timeout=RUN_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(
                f"the SDK script did not end within {RUN_TIMEOUT} s: {exc.stdout!r}"
            ) from None
        lines = [json.loads(line) for line in result.stdout.decode().splitlines() if line.strip()]
        report = f"{lines}\n{result.stderr.decode(errors='replace')[-3000:]}"
        assert lines[:1] == [{"sdk": self.version}], report
        if expect_failure:
            assert "failed" in lines[-1], report
            return lines[1:]
        assert result.returncode == 0, report
        assert lines[-1] == {"done": True}, report
        return lines[1:-1]

    async def arun(self, *steps: dict[str, Any]) -> SdkRun:
        """``run`` beside other work on the test's event loop."""
        proc = await asyncio.create_subprocess_exec(
            *self._command(),
            cwd=self.workdir,
            env=self._env(),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert proc.stdin is not None
        assert proc.stdout is not None
        assert proc.stderr is not None
        reads = asyncio.gather(proc.stdout.read(), proc.stderr.read())
        try:
            proc.stdin.write(self._plan(list(steps)))
            await proc.stdin.drain()
            proc.stdin.close()
            returncode = await asyncio.wait_for(proc.wait(), RUN_TIMEOUT)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            partial = self._result(-1, *await reads)
            raise AssertionError(f"no end within {RUN_TIMEOUT} s: {partial}") from None
        except BaseException:  # cancelled with a failing test: the driver goes too
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            reads.cancel()
            raise
        return self._result(returncode, *await reads)
