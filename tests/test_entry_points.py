"""The name `pty` means the Django app on every start-up path, even after Twisted took the stdlib module."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support.hostagent import REPO_ROOT

pytestmark = pytest.mark.stack  # each test runs an entry point

# What the plain `daphne` command does: import Twisted (and with it the
# standard-library pty) before the repository is on sys.path, then the app.
DAPHNE_LIKE = """
import sys
sys.path = [p for p in sys.path if p not in ("", ".", {root!r})]
import twisted.internet.process
early = sys.modules["pty"]  # what Twisted loaded; nothing here imports the module itself
assert not hasattr(early, "__path__"), "expected the standard-library module first"
sys.path.insert(0, {root!r})
import wrenn
import pty.protocol
assert pty.__path__ == [{root!r} + "/pty"], pty.__path__
assert twisted.internet.process._pty is early, "Twisted keeps its own module"
print("ok")
"""


def test_wrenn_pins_pty_to_the_app_after_twisted_loaded_the_stdlib_module() -> None:
    result = subprocess.run(
        [sys.executable, "-c", DAPHNE_LIKE.format(root=str(REPO_ROOT))],
        cwd="/",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_manage_py_check_runs() -> None:
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
