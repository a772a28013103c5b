"""`make cluster` for tests: scripts/run-cluster.sh run as a user runs it, on a database of its own
in the real PostgreSQL (which the script gives a role of its own) and the Redis the script starts,
and the processes it started."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .hostagent import REPO_ROOT, _let_sandbox_user_through, free_port
from .stack import POSTGRES_URL, drop_database, drop_role

RUN_CLUSTER = REPO_ROOT / "scripts" / "run-cluster.sh"
BANNER_END = "Ctrl-C stops everything."
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


@dataclass
class Cluster:
    proc: subprocess.Popen[bytes]
    port: int
    database: str
    output: Path
    # The script's own children while it runs: pid -> (start time, command line).
    children: dict[int, tuple[str, str]]
    workers: int = 0

    @property
    def banner(self) -> str:
        return self.output.read_text(errors="replace")

    def banner_field(self, pattern: str) -> str:
        match = re.search(pattern, self.banner)
        assert match, f"{pattern!r} is not in the banner:\n{self.banner}"
        return match.group(1)

    @property
    def data_dir(self) -> Path:
        return self.output.parent / "data"

    def log(self, name: str) -> str:
        """One of the script's logs (worker1.log, haproxy.log, …) as written so far."""
        path = self.data_dir / name
        return path.read_text(errors="replace") if path.exists() else ""

    def log_tail(self, name: str, lines: int = 30) -> str:
        """The end of one of the script's logs, for failure messages."""
        return "\n".join(self.log(name).splitlines()[-lines:])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def worker_pid(self, worker: int) -> int:
        """The pid of daphne worker ``worker`` (1-based), the one listening on PORT + worker."""
        listens = f"-p {self.port + worker} "
        pids = [
            pid for pid, (_, cmdline) in self.children.items() if "daphne" in cmdline and listens in cmdline
        ]
        assert len(pids) == 1, f"worker{worker} is not one of the script's children: {self.children}"
        return pids[0]

    def stop(self) -> int:
        """SIGTERM to the script alone, as a supervisor would send; it must stop its children."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            # Only so that a broken script leaves nothing behind; the test has failed already.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait()


def require_haproxy() -> None:
    """CI installs HAProxy (.ci/run); elsewhere try as `make cluster` does, or skip."""
    if shutil.which("haproxy"):
        return
    installer = REPO_ROOT / "scripts" / "install-system-packages.sh"
    result = subprocess.run([installer, "haproxy"], capture_output=True, text=True, timeout=300, check=False)
    if result.returncode != 0 or not shutil.which("haproxy"):
        pytest.skip(f"HAProxy is not installed and cannot be installed here: {result.stderr.strip()}")


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port_run(count: int) -> int:
    """A free port whose next ``count - 1`` ports are free too: the proxy's and the workers'."""
    for _ in range(100):
        base = free_port()
        if base + count <= 65535 and all(port_is_free(base + i) for i in range(1, count)):
            return base
    raise RuntimeError(f"found no {count} consecutive free ports")


def stat_fields(pid: int) -> list[str] | None:
    """Fields 3 onwards of /proc/<pid>/stat (state, ppid, …), or None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2 :].split()


def children_of(parent: int) -> dict[int, tuple[str, str]]:
    found: dict[int, tuple[str, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = stat_fields(int(entry.name))
        if fields is None or int(fields[1]) != parent:
            continue
        with contextlib.suppress(OSError):
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            found[int(entry.name)] = (fields[19], cmdline)  # field 22: start time, against pid reuse
    return found


def wait_for_banner(proc: subprocess.Popen[bytes], output: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while BANNER_END not in output.read_text(errors="replace"):
        if proc.poll() is not None:
            raise RuntimeError(f"run-cluster.sh exited with {proc.returncode}:\n{output.read_text()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"run-cluster.sh printed no banner in time:\n{output.read_text()}")
        time.sleep(0.2)


@contextlib.contextmanager
def running_cluster(workdir: Path, workers: int) -> Iterator[Cluster]:
    """run-cluster.sh with ``workers`` daphne workers, its output and data in ``workdir``; once the
    banner is out, the running cluster. Afterwards the script is stopped and its database and role
    dropped."""
    require_haproxy()
    data_dir = workdir / "data"
    data_dir.mkdir()
    _let_sandbox_user_through(data_dir)
    database = f"wrenn_cluster_{secrets.token_hex(4)}"  # created by the script itself
    port = free_port_run(workers + 1)
    # No REDIS_URL: the script starts a Redis of its own, as `make cluster` does.
    inherited = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "PGPASSFILE", "PGPASSWORD")}
    env = {
        **inherited,
        "WORKERS": str(workers),
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "PY": sys.executable,
        "DATABASE_URL": f"{POSTGRES_URL.rpartition('/')[0]}/{database}",
        "WRENN_DATA_DIR": str(data_dir),
        "WRENN_HOSTAGENT_ADDR": f"127.0.0.1:{free_port()}",
        "HOSTAGENT_CGROUP_ROOT": f"wrenn-{database}",
        "PYTHONUNBUFFERED": "1",
    }
    output = workdir / "run-cluster.out"
    with output.open("wb") as out:
        proc = subprocess.Popen(
            [RUN_CLUSTER],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    running = Cluster(proc=proc, port=port, database=database, output=output, children={}, workers=workers)
    try:
        wait_for_banner(proc, output)
        running.children = children_of(proc.pid)
        yield running
    finally:
        running.stop()
        drop_database(database)
        drop_role(database)
