"""The embedded default's SQLite database takes concurrent writers without "database is locked"."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.hostagent import REPO_ROOT

# Two processes (as daphne and the monitor are), each writing in a transaction that another
# one holds open for a while: with the settings' busy timeout the second waits its turn.
WRITER = """
import os, sys, time
import django
os.environ["DJANGO_SETTINGS_MODULE"] = "wrenn.settings"
django.setup()
from django.db import connection, transaction
with connection.cursor() as cursor:
    print(cursor.execute("PRAGMA journal_mode").fetchone()[0], flush=True)
    cursor.execute("CREATE TABLE IF NOT EXISTS t (n INTEGER)")
with transaction.atomic():
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO t VALUES (%s)", [int(sys.argv[1])])
    print("writing", flush=True)
    time.sleep(float(sys.argv[2]))
print("done", flush=True)
"""


@pytest.mark.stack  # Django in two processes of their own
def test_sqlite_uses_wal_and_waits_for_the_write_lock(tmp_path: Path) -> None:
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}"}
    env.pop("DJANGO_SETTINGS_MODULE", None)

    def writer(n: int, hold: float) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-c", WRITER, str(n), str(hold)],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    first = writer(1, 7.0)  # longer than SQLite's default busy timeout (5 s)
    assert first.stdout is not None
    assert first.stdout.readline().strip() == "wal"
    assert first.stdout.readline().strip() == "writing"  # holds the write lock for 7 s
    second = writer(2, 0)
    out, err = second.communicate(timeout=60)
    assert second.returncode == 0, err
    assert out.split() == ["wal", "writing", "done"]
    rest, err = first.communicate(timeout=60)
    assert first.returncode == 0, err
    assert rest.split() == ["done"]
