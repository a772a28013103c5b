"""Runs a piece of user code against Wrenn's published Python SDK, as a user of its public API.

Run by an SDK virtualenv's python (``.venv-sdk-<version>/bin/python -I``), from a directory outside
the repository (see driver.py). stdin is one JSON object ``{"capsule_id": …, "code": …}``; the
code runs with ``sdk`` (the SDK's package), ``capsule`` (``Capsule.connect(capsule_id)``) and
``emit(**fields)`` (one JSON line on stdout) in its globals. The last line is ``{"done": true}``,
or ``{"failed": …, "error": <exception class>, "code": <the SDK error's code>}``.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import sys
from typing import Any


def emit(**line: Any) -> None:
    print(json.dumps(line, default=str), flush=True)


def main() -> int:
    plan = json.load(sys.stdin)
    # Imported by name: mypy, run over the repository, would check this against its own `wrenn`.
    sdk: Any = importlib.import_module("wrenn")
    if not hasattr(sdk, "Capsule"):
        emit(failed=f"`import wrenn` found {sdk.__file__}, not the SDK: run with the SDK's python -I")
        return 2
    emit(sdk=importlib.metadata.version("wrenn"))
    try:
        capsule = sdk.Capsule.connect(plan["capsule_id"])
        exec(plan["code"], {"sdk": sdk, "capsule": capsule, "emit": emit})  # noqa: S102 - the test's code
    except Exception as exc:
        emit(
            failed=f"{type(exc).__name__}: {exc}",
            error=type(exc).__name__,
            code=getattr(exc, "code", None),
            status=getattr(exc, "status_code", None),
        )
        return 1
    emit(done=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
