"""`manage.py monitor`: one pass declares quiet hosts unreachable and pauses idle capsules; the loop
stops cleanly on SIGTERM and SIGINT."""

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone

from capsules.actions import create_capsule
from capsules.models import Host, Sandbox, Team
from tests.support.hostagent import REPO_ROOT

Status = Sandbox.Status


def test_one_pass_declares_a_quiet_host_unreachable(team: Team) -> None:
    quiet = Host.objects.create(address="10.0.0.1:1", last_heartbeat_at=timezone.now() - timedelta(minutes=5))
    capsule = Sandbox.objects.create(team=team, host=quiet, status=Status.RUNNING)
    call_command("monitor", "--once")
    quiet.refresh_from_db()
    capsule.refresh_from_db()
    assert quiet.status == Host.Status.UNREACHABLE
    assert (capsule.status, capsule.status_before_missing) == (Status.MISSING, Status.RUNNING)


def test_one_pass_pauses_an_idle_capsule(team: Team, agent_host: Host) -> None:
    idle = create_capsule(team, timeout_sec=60)
    busy = create_capsule(team, timeout_sec=60)
    Sandbox.objects.filter(pk=idle.pk).update(last_active_at=timezone.now() - timedelta(minutes=2))
    call_command("monitor", "--once")
    idle.refresh_from_db()
    busy.refresh_from_db()
    assert (idle.status, busy.status) == (Status.PAUSED, Status.RUNNING)


def test_one_pass_with_nothing_to_do_changes_nothing(team: Team, host: Host) -> None:
    capsule = Sandbox.objects.create(
        team=team, host=host, status=Status.RUNNING, last_active_at=timezone.now()
    )
    call_command("monitor", "--once")
    capsule.refresh_from_db()
    host.refresh_from_db()
    assert (capsule.status, host.status) == (Status.RUNNING, Host.Status.ONLINE)


def test_interval_must_be_positive(db: None) -> None:
    with pytest.raises(CommandError, match="--interval must be positive"):
        call_command("monitor", "--interval", "0")


@pytest.mark.stack  # manage.py monitor as a subprocess
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_loop_stops_cleanly_on_a_signal(db: None, tmp_path: Path, signum: int) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("the monitor subprocess is pointed at the test database by a PostgreSQL URL")
    settings = connection.settings_dict
    password = f":{settings['PASSWORD']}" if settings["PASSWORD"] else ""
    credentials = f"{settings['USER']}{password}@"
    url = f"postgres://{credentials}{settings['HOST']}:{settings['PORT']}/{settings['NAME']}"
    log_path = tmp_path / "monitor.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "monitor", "--interval", "0.2"],
            cwd=REPO_ROOT,
            env={**os.environ, "DATABASE_URL": url, "WRENN_LOG_LEVEL": "INFO"},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 30
            while "monitor started" not in log_path.read_text():
                assert proc.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.05)
            time.sleep(0.5)  # a few passes
            proc.send_signal(signum)
            assert proc.wait(timeout=10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    output = log_path.read_text()
    assert "monitor stopped" in output
    assert "Traceback" not in output
