"""The secret key: never the public development default on a server other machines can reach."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from tests.support.hostagent import REPO_ROOT
from wrenn.secret_key import DEVELOPMENT_KEY, choose, is_loopback

LOOPBACK = ["localhost", "127.0.0.1", "[::1]"]


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "127.0.1.1", "::1", "[::1]", "app.localhost"])
def test_loopback_names_and_addresses(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.5", "wrenn.example.com", "*", ".example.com"])
def test_addresses_beyond_loopback(host: str) -> None:
    assert not is_loopback(host)


def test_production_mode_refuses_the_development_key() -> None:
    with pytest.raises(
        ImproperlyConfigured, match=r"HOST=0\.0\.0\.0 is not a loopback address.*DJANGO_SECRET_KEY"
    ):
        choose("", "", debug=False, host="0.0.0.0", allowed_hosts=LOOPBACK)


def test_a_public_allowed_host_is_production_mode_behind_a_loopback_bind() -> None:
    """Workers behind a proxy bind to loopback, but answer for the public name."""
    with pytest.raises(ImproperlyConfigured, match=r"DJANGO_ALLOWED_HOSTS names wrenn\.example\.com"):
        choose("", "", debug=False, host="127.0.0.1", allowed_hosts=[*LOOPBACK, "wrenn.example.com"])


def test_the_development_key_given_explicitly_is_refused_too() -> None:
    with pytest.raises(ImproperlyConfigured, match="public development DJANGO_SECRET_KEY"):
        choose(DEVELOPMENT_KEY, "", debug=False, host="0.0.0.0", allowed_hosts=LOOPBACK)


def test_loopback_development_keeps_the_development_key() -> None:
    assert choose("", "", debug=False, host="", allowed_hosts=LOOPBACK) == DEVELOPMENT_KEY
    assert choose("", "", debug=False, host="127.0.0.1", allowed_hosts=LOOPBACK) == DEVELOPMENT_KEY


def test_debug_keeps_the_development_key_on_any_address() -> None:
    assert choose("", "", debug=True, host="0.0.0.0", allowed_hosts=["*"]) == DEVELOPMENT_KEY


def test_a_key_of_its_own_is_used_in_production_mode() -> None:
    assert choose("k" * 50, "", debug=False, host="0.0.0.0", allowed_hosts=["*"]) == "k" * 50


def test_the_key_file_is_read_and_the_variable_wins_over_it(tmp_path: Path) -> None:
    key_file = tmp_path / "secret_key"
    key_file.write_text("from-the-file\n")
    assert choose("", str(key_file), debug=False, host="0.0.0.0", allowed_hosts=LOOPBACK) == "from-the-file"
    assert choose("from-the-variable", str(key_file), debug=False, host="", allowed_hosts=LOOPBACK) == (
        "from-the-variable"
    )


def test_a_missing_or_empty_key_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ImproperlyConfigured, match=r"DJANGO_SECRET_KEY_FILE=\S+/missing cannot be read"):
        choose("", str(tmp_path / "missing"), debug=True, host="", allowed_hosts=LOOPBACK)
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ImproperlyConfigured, match=r"DJANGO_SECRET_KEY_FILE=\S+/empty is empty"):
        choose("", str(tmp_path / "empty"), debug=True, host="", allowed_hosts=LOOPBACK)


# --- the entry points, each in a process of its own, as an operator starts them ----------------

MANAGE_CHECK = [sys.executable, "manage.py", "check"]
# What `daphne wrenn.asgi:application` imports.
DAPHNE_IMPORT = [sys.executable, "-c", "import wrenn.asgi"]


def run(argv: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_") and k != "HOST"}
    return subprocess.run(
        argv, cwd=REPO_ROOT, env={**base, **env}, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.stack
@pytest.mark.parametrize("argv", [MANAGE_CHECK, DAPHNE_IMPORT], ids=["manage.py", "daphne"])
def test_production_mode_on_the_default_key_does_not_start(argv: list[str]) -> None:
    result = run(argv, DJANGO_DEBUG="0", HOST="0.0.0.0")
    assert result.returncode != 0
    assert "Refusing to start with the public development DJANGO_SECRET_KEY" in result.stderr
    assert "HOST=0.0.0.0 is not a loopback address" in result.stderr


@pytest.mark.stack
@pytest.mark.parametrize(
    "env",
    [
        {"DJANGO_DEBUG": "0", "HOST": "0.0.0.0", "DJANGO_SECRET_KEY": "an-operator-made-key-" + "x" * 40},
        {"DJANGO_DEBUG": "1", "HOST": "0.0.0.0"},
        {"DJANGO_DEBUG": "0", "HOST": "127.0.0.1"},
    ],
    ids=["own-key", "debug", "loopback"],
)
def test_manage_py_starts_otherwise(env: dict[str, str]) -> None:
    result = run(MANAGE_CHECK, **env)
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout
