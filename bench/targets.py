"""What the benchmark runs against, each started fresh for a run and stopped after it.

- ``floor``: a local PTY of the benchmark process (no server at all);
- ``terminado``: the peer, in its own virtualenv (.venv-peer), one shell per WebSocket;
- ``wrenn``: this project in the production topology (two daphne workers, the Redis channel
  layer, PostgreSQL, the host agent), started as the integration tests start it;
- ``wrenn-embedded``: this project as ``make run`` starts it (SQLite, in-memory layer);
- ``wrenn-bwrap``: ``wrenn`` with its host agent on the bubblewrap runtime (what it ran before
  capsules were containers), for time to prompt only;
- ``agent-oci``, ``agent-bwrap``: a host agent alone, on one runtime, for the capsule workload
  (create, destroy, idle memory), driven over gRPC.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.shells import LocalPty, Shell, TerminadoShell, WrennShell
from tests.support.hostagent import HostAgentProcess, free_port, start_hostagent
from tests.support.stack import start_stack

REPO = Path(__file__).resolve().parent.parent
PEER_PYTHON = REPO / ".venv-peer" / "bin" / "python"
SHELL = ["/bin/sh"]
# What every terminal target runs; the agent targets run the capsule workload only.
SHELL_WORKLOADS = ("echo", "bulk", "sessions", "prompt", "fanout")
LISTENING_RE = re.compile(r"hostagent listening on \S+ \(runtime=(\w+)\)")
NO_NETWORK = "capsules get NO outbound network"
_POOLS = iter(range(1 << 30))


def network_options() -> dict[str, str]:
    """A capsule address pool, nftables table and veth prefix of the benchmark's own.

    Outside 10.214/16, which the tests' agents take /24s of: a pool overlapping the routes of
    another agent's live capsules makes that agent start without capsule networks.
    """
    tag = uuid.uuid4().hex[:5]
    return {
        "HOSTAGENT_NETWORK_POOL": f"10.215.{(os.getpid() + next(_POOLS)) % 256}.0/24",
        "HOSTAGENT_NETWORK_TABLE": f"wrenn_bench_{tag}",
        "HOSTAGENT_NETWORK_PREFIX": f"b{tag}",
    }


def network_args() -> list[str]:
    options = network_options()
    return [
        *("--network-pool", options["HOSTAGENT_NETWORK_POOL"]),
        *("--network-table", options["HOSTAGENT_NETWORK_TABLE"]),
        *("--network-prefix", options["HOSTAGENT_NETWORK_PREFIX"]),
    ]


def agent_runtime(log: str) -> str:
    """The runtime an agent chose, from the line it logs once it listens ('' if not yet)."""
    match = LISTENING_RE.search(log)
    return match.group(1) if match else ""


def wait_for_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answers; the status does not matter
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not answer on port {port} within {timeout} s")


class Target:
    name = ""
    # Whether several viewers can watch one session (only this project can).
    shares_sessions = False
    workloads: tuple[str, ...] = SHELL_WORKLOADS

    def start(self) -> None: ...
    def stop(self) -> None: ...

    def runtime(self) -> str:
        """The host agent's capsule runtime behind this target ('' without an agent)."""
        return ""

    async def open(self, argv: list[str] | None = None, worker: int = 0) -> Shell:
        raise NotImplementedError

    async def join(self, shell: Shell, worker: int) -> Shell:
        raise NotImplementedError(f"{self.name} has no shared sessions")

    def server_pids(self) -> dict[str, int]:
        """The processes whose memory counts as the server's (shells excluded)."""
        return {}


class Floor(Target):
    name = "floor"

    async def open(self, argv: list[str] | None = None, worker: int = 0) -> Shell:
        return LocalPty(argv or SHELL)


class Terminado(Target):
    name = "terminado"

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self) -> None:
        if not PEER_PYTHON.exists():
            raise RuntimeError(f"{PEER_PYTHON} is missing: `make bench` creates it")
        self.port = free_port()
        server = REPO / "bench" / "peer" / "terminado_server.py"
        # -I: isolated, so neither the repository nor the current directory is on sys.path
        # and terminado gets the standard-library pty.
        self.proc = subprocess.Popen(
            [str(PEER_PYTHON), "-I", str(server), str(self.port), *SHELL],
            cwd=tempfile.gettempdir(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, self.proc, "terminado")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    async def open(self, argv: list[str] | None = None, worker: int = 0) -> Shell:
        if argv and argv != SHELL:
            raise ValueError("terminado runs its configured shell only")
        return await TerminadoShell.start(f"ws://127.0.0.1:{self.port}/websocket")

    def server_pids(self) -> dict[str, int]:
        assert self.proc is not None
        return {"terminado": self.proc.pid}


@dataclass
class WrennTarget(Target):
    """Common to both topologies: sessions on the demo capsule, through its API key."""

    ports: list[int] = field(default_factory=list)
    capsule_id: str = ""
    api_key: str = ""
    shares_sessions = True
    # The binary extension, as an SDK that cares for throughput would use it; the JSON
    # protocol (the terminal page's) is the `wrenn-json` target.
    binary = True

    def url(self, worker: int) -> str:
        port = self.ports[worker % len(self.ports)]
        return f"ws://127.0.0.1:{port}/v1/capsules/{self.capsule_id}/pty"

    async def open(self, argv: list[str] | None = None, worker: int = 0) -> Shell:
        return await WrennShell.start(self.url(worker), self.api_key, argv or SHELL, self.binary)

    async def join(self, shell: Shell, worker: int) -> Shell:
        assert isinstance(shell, WrennShell)
        return await WrennShell.join(self.url(worker), self.api_key, shell.tag, self.binary)


class WrennProduction(WrennTarget):
    name = "wrenn"
    # auto: oci where runc works (as root), else bwrap, else plain processes.
    agent_runtime = "auto"

    def __init__(self, workers: int = 2) -> None:
        super().__init__()
        self.workers = workers
        self.stack: Any = None

    def start(self) -> None:
        data = Path(tempfile.mkdtemp(prefix="wrenn-bench-"))
        self.stack = start_stack(
            data, workers=self.workers, ping=(20, 30), runtime=self.agent_runtime, agent_args=network_args()
        )
        demo = self.stack.demo()
        self.ports = [port for port, _ in self.stack.workers]
        self.capsule_id, self.api_key = demo["capsule_id"], demo["api_key"]

    def stop(self) -> None:
        if self.stack is not None:
            self.stack.stop()

    def server_pids(self) -> dict[str, int]:
        pids = {"daphne": self.stack.workers[0][1].pid}
        pids["hostagent"] = self.stack.agent.proc.pid
        return pids

    def runtime(self) -> str:
        return agent_runtime(self.stack.agent.log())


class WrennBwrap(WrennProduction):
    """The production topology on the bubblewrap runtime: each terminal its own bwrap, as
    capsules were before each became a container. For the time-to-prompt comparison."""

    name = "wrenn-bwrap"
    agent_runtime = "bwrap"
    workloads = ("prompt",)


class WrennProductionJson(WrennProduction):
    """The production topology with JSON frames (output in base64), as the terminal page uses it."""

    name = "wrenn-json"
    binary = False


class WrennEmbedded(WrennTarget):
    """`make run`'s script, on a data directory and ports of its own."""

    name = "wrenn-embedded"

    def __init__(self) -> None:
        super().__init__()
        self.proc: subprocess.Popen[bytes] | None = None
        directory = Path(tempfile.mkdtemp(prefix="wrenn-bench-embedded-"))
        # Search permission (not read) for the capsules' unprivileged uids, which must reach their
        # directories below it, as they do below a checkout's var/: else the agent falls back
        # from oci and bwrap to plain processes.
        directory.chmod(0o711)
        self.log = directory / "run.log"

    def start(self) -> None:
        port = free_port()
        env = {
            **os.environ,
            "PORT": str(port),
            "HOST": "127.0.0.1",
            "PY": str(REPO / ".venv" / "bin" / "python"),
            "WRENN_DATA_DIR": str(self.log.parent / "data"),
            "WRENN_HOSTAGENT_ADDR": f"127.0.0.1:{free_port()}",
            "HOSTAGENT_CGROUP_ROOT": f"wrenn-bench-{port}",
            **network_options(),
        }
        env.pop("REDIS_URL", None)
        env.pop("DATABASE_URL", None)
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [str(REPO / "scripts" / "run-local.sh")],
                cwd=REPO,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 120
        while "API key:" not in self.log.read_text(errors="replace"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"run-local.sh did not start:\n{self.log.read_text(errors='replace')}")
            time.sleep(0.2)
        wait_for_port(port, self.proc, "daphne (embedded)")
        banner = self.log.read_text(errors="replace")
        self.api_key = _field(r"API key:\s+(\S+)", banner)
        self.capsule_id = _field(r"/v1/capsules/([^/]+)/pty", banner)
        self.ports = [port]

    def stop(self) -> None:
        if self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def server_pids(self) -> dict[str, int]:
        assert self.proc is not None
        found: dict[str, int] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError):
                continue
            if ppid == self.proc.pid and "daphne" in cmdline:
                found["daphne"] = int(entry.name)
            elif ppid == self.proc.pid and "hostagent" in cmdline:
                found["hostagent"] = int(entry.name)
        return found

    def runtime(self) -> str:
        agent_log = self.log.parent / "data" / "hostagent.log"
        return agent_runtime(agent_log.read_text(errors="replace"))


class HostAgent(Target):
    """A host agent alone on one runtime, its capsules created and destroyed over gRPC."""

    name = ""
    agent_runtime = ""
    workloads = ("capsules",)

    def __init__(self) -> None:
        self.agent: HostAgentProcess | None = None

    def start(self) -> None:
        data = Path(tempfile.mkdtemp(prefix=f"wrenn-bench-{self.name}-"))
        self.agent = start_hostagent(data, runtime=self.agent_runtime, args=network_args())
        if NO_NETWORK in self.agent.log():
            # Creation time and memory would leave out the network: not the figure asked for.
            self.stop()
            raise RuntimeError(f"{self.name}: the agent has no capsule networks:\n{self.agent.log()}")

    def stop(self) -> None:
        if self.agent is not None:
            self.agent.stop()

    def runtime(self) -> str:
        assert self.agent is not None
        return agent_runtime(self.agent.log())


class HostAgentOci(HostAgent):
    name = "agent-oci"
    agent_runtime = "oci"


class HostAgentBwrap(HostAgent):
    name = "agent-bwrap"
    agent_runtime = "bwrap"


def _field(pattern: str, text: str) -> str:
    match = re.search(pattern, text)
    if match is None:
        raise RuntimeError(f"{pattern!r} not in:\n{text}")
    return match.group(1)


TARGETS = {
    target.name: target
    for target in (
        Floor,
        Terminado,
        WrennProduction,
        WrennProductionJson,
        WrennEmbedded,
        WrennBwrap,
        HostAgentOci,
        HostAgentBwrap,
    )
}
