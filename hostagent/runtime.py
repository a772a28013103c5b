"""Sandbox runtimes: what a capsule is on this host, and how its processes start.

The base class is a capsule that is only a directory: a runtime turns a start request into a
`LaunchSpec` (the program, arguments, environment, working directory and host user that
`hostagent.spawn` forks under a new PTY); plain processes (`ProcessRuntime`) and bubblewrap
(`hostagent.bwrap`) work so. The OCI runtime (`hostagent.oci`) overrides the rest: a long-lived
environment per capsule, its limits and network, and its own way to start a process in it.
`hostagent.runtimes` chooses one.
"""

from __future__ import annotations

import logging
import os
import pwd
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from hostagent.blocking import run_blocking
from hostagent.errors import FailedPrecondition, InvalidArgument
from hostagent.procs import process_trees
from hostagent.spawn import LaunchSpec, Piped, Spawned, spawn, spawn_piped

if TYPE_CHECKING:
    from hostagent.freezer import Freezer
    from hostagent.network import NetworkConfig

log = logging.getLogger(__name__)

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BASE_ENV = {"PATH": DEFAULT_PATH, "TERM": "xterm-256color", "LANG": "C.UTF-8"}
ENV_NAME_RE = re.compile(r"^[^=\x00]+$")


class EnvironmentStopped(FailedPrecondition):
    """A capsule's environment was found stopped as a process was started into it."""


@dataclass(frozen=True)
class LaunchRequest:
    cmd: str
    args: list[str]
    envs: dict[str, str]
    cwd: str
    user: str
    # A terminal session (a PTY) or a process with pipes (exec).
    terminal: bool = True


def validate_request(request: LaunchRequest) -> None:
    """Reject what execve would choke on, with a message naming the culprit."""
    for value in (request.cmd, *request.args, request.cwd, request.user):
        if "\x00" in value:
            raise InvalidArgument("cmd, args, cwd and user must not contain NUL bytes")
    for name, value in request.envs.items():
        if not ENV_NAME_RE.match(name):
            raise InvalidArgument(f"invalid environment variable name {name!r}")
        if "\x00" in value:
            raise InvalidArgument(f"environment variable {name} must not contain NUL bytes")


@dataclass(frozen=True)
class Limits:
    """What a capsule may use; kept in `<sandbox>/limits.json` for restarts."""

    vcpus: int
    memory_mb: int
    disk_mb: int
    pids: int

    def describe(self) -> str:
        return (
            f"{self.vcpus} vCPU, {self.memory_mb} MiB memory, {self.disk_mb} MiB disk, {self.pids} processes"
        )


@dataclass(frozen=True)
class Defaults:
    """The agent's limits for what a request leaves at 0 (command-line options)."""

    vcpus: int = 1
    memory_mb: int = 512
    disk_mb: int = 1024
    pids: int = 1024
    max_vcpus: int = 64
    max_memory_mb: int = 1024 * 1024
    max_disk_mb: int = 1024 * 1024

    def limits(self, vcpus: int, memory_mb: int, disk_mb: int) -> Limits:
        limits = Limits(
            vcpus=vcpus or self.vcpus,
            memory_mb=memory_mb or self.memory_mb,
            disk_mb=disk_mb or self.disk_mb,
            pids=self.pids,
        )
        if limits.vcpus > self.max_vcpus:
            raise InvalidArgument(f"vcpus must be at most {self.max_vcpus} on this host")
        if not 16 <= limits.memory_mb <= self.max_memory_mb:
            raise InvalidArgument(f"memory_mb must be between 16 and {self.max_memory_mb}")
        if not 16 <= limits.disk_mb <= self.max_disk_mb:
            raise InvalidArgument(f"disk_size_mb must be between 16 and {self.max_disk_mb}")
        return limits


def off(reason: str) -> dict[str, Any]:
    return {"on": False, "reason": reason}


class Runtime(ABC):
    name: ClassVar[str]
    # Why a stronger runtime was not chosen (see choose_runtime), for the isolation report.
    fallback_reason = ""

    def prepare_sandbox(self, root: Path) -> None:
        """Create (or repair after a restart) what the runtime needs in a capsule directory."""
        (root / "home").mkdir(parents=True, exist_ok=True)
        (root / "tmp").mkdir(parents=True, exist_ok=True)

    @abstractmethod
    def launch_spec(self, sandbox_id: str, root: Path, request: LaunchRequest) -> LaunchSpec: ...

    async def spawn(
        self,
        sandbox_id: str,
        root: Path,
        request: LaunchRequest,
        cols: int,
        rows: int,
        cgroup_procs: str | None,
    ) -> Spawned:
        """Start the request's process under a new PTY (a runtime may do it its own way)."""
        # In a thread: it looks the command up in the capsule's files, and may ask NSS for a user.
        spec = await run_blocking(self.launch_spec, sandbox_id, root, request)
        return await spawn(spec, cols, rows, cgroup_procs)

    async def spawn_piped(
        self,
        sandbox_id: str,
        root: Path,
        request: LaunchRequest,
        cgroup_procs: str | None,
        stdin: bool = False,
    ) -> Piped:
        """Start the request's process with pipes for stdout and stderr, and for stdin a pipe if
        `stdin` else /dev/null, as the leader of a session of its own (a runtime may do it its
        own way)."""
        spec = await run_blocking(self.launch_spec, sandbox_id, root, request)
        return await spawn_piped(spec, cgroup_procs, stdin)

    def file_mounts(self, root: Path) -> dict[str, str]:
        """Capsule paths the file helper must translate to host paths: none where the capsule
        has a filesystem view of its own (the kernel resolves them there)."""
        return {}

    # The user a process started by the API runs as when the request names none.
    exec_user = "root"
    # Whether the capsule's processes share one pid namespace of their own: the pids the API
    # shows are then the ones they see; otherwise the host's.
    own_pid_namespace = False

    def capsule_pids(self, sandbox_id: str, leaders: list[int]) -> list[int]:
        """Host pids of every process in the capsule (blocking): the sessions the agent started
        and everything they started."""
        return process_trees(leaders)

    # A long-lived environment per capsule: only the OCI runtime has one.

    def isolation(self) -> dict[str, dict[str, Any]]:
        """What this runtime isolates, part by part, for the heartbeat and the Host row."""
        why = self.fallback_reason or f"runtime={self.name}"
        return {
            "runtime": off(f"{self.name}: no container per capsule ({why})"),
            "network": off(f"capsules share the host's network ({why})"),
            "limits": off(f"vcpus, memory_mb, disk_size_mb and process limits are not enforced ({why})"),
            "seccomp": off(f"no seccomp filter ({why})"),
        }

    def limits_for(self, vcpus: int, memory_mb: int, disk_mb: int) -> Limits | None:
        """The limits a create asks for (defaults filled in, checked), or None if not enforced."""
        return None

    def save_limits(self, root: Path, limits: Limits) -> None:
        return  # only a runtime that enforces limits keeps them

    async def start_environment(
        self, sandbox_id: str, root: Path, policy: dict[str, Any] | None, paused: bool
    ) -> None:
        return  # the sessions of a capsule need nothing but its directory

    async def stop_environment(self, sandbox_id: str, root: Path | None) -> int:
        return 0

    def connect(self, network: NetworkConfig) -> None:
        """Give capsules networks of their own, if this runtime can (blocking: it probes)."""
        return

    async def recover(self) -> None:
        """At the agent's start, before the capsules' environments start again."""
        return

    async def maintain(self) -> None:
        """Every few seconds: put back what someone else may have undone (firewall rules)."""
        return

    def close(self) -> None:
        """At the agent's stop, after every capsule's environment is gone (blocking)."""
        return

    def own_freezer(self) -> Freezer | None:
        """The runtime's own way to pause its capsules, if it has one."""
        return None

    def alive(self, sandbox_id: str) -> bool:
        """Whether the capsule's environment is up (blocking)."""
        return True

    async def set_policy(self, sandbox_id: str, policy: dict[str, Any] | None) -> None:
        return  # kept in the sandbox's directory only: this runtime gives no network of its own

    def oom_kills(self, sandbox_id: str) -> int:
        return 0

    def cpu_and_memory(self, sandbox_id: str) -> tuple[int | None, int | None]:
        """(CPU microseconds used, memory bytes in use) from the capsule's cgroup; (None, None)
        for a runtime that gives it none (blocking)."""
        return None, None

    def port_namespace(self, sandbox_id: str) -> str:
        """The path of the capsule's own network namespace, for previews (PortForward).

        This runtime has none: its capsules share the host's network, whose loopback holds the
        platform's own services (PostgreSQL, Redis, daphne, this agent), so a preview of
        "127.0.0.1:<port> of the capsule" would open the host's. Refused instead.
        """
        raise FailedPrecondition(
            f"previews need a capsule with a network of its own; the {self.name} runtime runs "
            f"capsules in the host's network (capsule {sandbox_id}), where a port would be the host's"
        )


def _own_user_name() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


class ProcessRuntime(Runtime):
    """Plain host processes: for development only, it isolates nothing."""

    name = "process"
    # Root only when the agent is root; the capsule's home is a directory of the host.
    exec_user = ""

    def file_mounts(self, root: Path) -> dict[str, str]:
        # No view of its own: the capsule's usual places map to its directory, and every other
        # absolute path is the host's (this runtime isolates nothing; docs/api.md says so).
        home, tmp = str(root / "home"), str(root / "tmp")
        return {"/root": home, "/home/user": home, "/tmp": tmp}  # noqa: S108 - capsule paths

    def launch_spec(self, sandbox_id: str, root: Path, request: LaunchRequest) -> LaunchSpec:
        home = root / "home"
        own = _own_user_name()
        user = request.user or own
        uid = gid = None
        groups: list[int] = []
        if user != own:
            try:
                entry = pwd.getpwnam(user)
            except KeyError:
                raise InvalidArgument(f"unknown user '{user}'") from None
            if os.geteuid() != 0:
                raise InvalidArgument(
                    f"cannot run as user '{user}': the host agent runs as '{own}', not as root"
                )
            uid, gid = entry.pw_uid, entry.pw_gid
            groups = os.getgrouplist(user, gid)
        env = {**BASE_ENV, "HOME": str(home), "USER": user, "LOGNAME": user, "SHELL": "/bin/bash"}
        env.update(request.envs)
        return LaunchSpec(
            file=request.cmd,
            argv=[request.cmd, *request.args],
            env=env,
            cwd=str(home / request.cwd) if request.cwd else str(home),
            uid=uid,
            gid=gid,
            groups=groups,
            display=request.cmd,
        )
