"""The OCI runtime: each capsule is one long-lived container run by runc.

CreateSandbox starts the container: its init (tini, reaping orphans, over `sleep infinity`)
holds the capsule's namespaces (user, pid, mount, network, ipc, uts, cgroup) and its cgroup,
with the limits of the request; every terminal is a `runc exec` into it, so the terminals of
one capsule see each other's processes, share localhost and files, and pause and resume
together. DestroySandbox deletes the container and everything in it.

What a process inside gets:
- a uid range of its own: capsule n maps uids 0-65535 to host uids UID_BASE + n * 65536 + …,
  so `root` inside is an unprivileged host uid, and no two capsules share one;
- a read-only root of the host's /usr and a short list of /etc entries (no host secrets, no
  service configuration); writable only its disk (`hostagent.disks`): home, /tmp, /var/tmp;
- `no_new_privs`, the capabilities of an unprivileged container for root (none for `user`),
  the seccomp filter of `hostagent.seccomp`;
- a cgroup with a memory limit (swap included, so the OOM kill stays inside), a pids limit and
  a CPU quota, through runc on cgroup v2 or v1;
- its own network namespace, wired and filtered from the host side by `hostagent.network`.

Environment variables reach a process through a 0600 process file runc reads, never a command
line. Why runc: Debian's crun (1.8) refuses hosts with both cgroup versions mounted ("hybrid",
as these machines are), runc drives v1, v2 and hybrid hierarchies the same way.

An agent restart is a capsule reboot: the agent kills every capsule's processes when it stops
(and what a crashed run left when it starts), then starts each capsule's container again on the
same disk; a paused capsule is started frozen, so it still reports paused until resumed.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from hostagent import bundle, disks, seccomp, usage
from hostagent.blocking import run_blocking
from hostagent.bundle import UID_RANGE
from hostagent.errors import AgentError, FailedPrecondition, ResourceExhausted
from hostagent.freezer import Freezer, _mounts, _v1_base
from hostagent.network import CapsuleNetworks, NetworkConfig, NetworkUnavailable
from hostagent.runtime import (
    Defaults,
    EnvironmentStopped,
    LaunchRequest,
    Limits,
    Runtime,
)
from hostagent.spawn import LaunchSpec, Piped, Spawned, close_quietly, piped, stdio_pipes

log = logging.getLogger(__name__)

CONTAINER_PREFIX = "wrenn-"
UID_BASE = 1 << 20
UID_TOP = 1 << 32
MAX_SLOTS = 4096
RUNC_TIMEOUT = 30.0
CONSOLE_TIMEOUT = 10.0
PR_SET_CHILD_SUBREAPER = 36


class RuncFailed(AgentError):
    pass


# What runc says to an exec into a container whose init has exited.
STOPPED_CONTAINER = "cannot exec in a stopped container"


def _set_child_subreaper() -> None:
    # A `runc exec --detach` process, and each container's init, then becomes our child once runc
    # exits: the agent waits for it (exit codes, pidfds) as for any other session.
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")


def cgroup_version() -> str:
    """'cgroup2' when the memory controller is on the unified hierarchy, else 'cgroup1' (or '')."""
    v1 = v2 = None
    for mount, fstype, options in _mounts():
        if fstype == "cgroup" and "memory" in options:
            v1 = mount
        elif fstype == "cgroup2":
            try:
                controllers = (Path(mount) / "cgroup.controllers").read_text().split()
            except OSError:
                controllers = []
            if "memory" in controllers:
                v2 = mount
    return "cgroup2" if v2 else ("cgroup1" if v1 else "")


def _memory_events_file(cgroup_root: str) -> tuple[Path, str] | None:
    """Where a capsule's OOM kills are counted: (directory of the parent cgroup, file name)."""
    for mount, fstype, options in _mounts():
        if fstype == "cgroup" and "memory" in options:
            return Path(mount) / cgroup_root, "memory.oom_control"
    for mount, fstype, _options in _mounts():
        if fstype == "cgroup2":
            return Path(mount) / cgroup_root, "memory.events"
    return None


class OciRuntime(Runtime):
    name = "oci"

    def __init__(
        self,
        runc: str,
        tini: str,
        state_dir: Path,
        defaults: Defaults,
        cgroup_root: str,
        uid_base: int = UID_BASE,
    ) -> None:
        self.runc = runc
        # Each capsule's init: tini reaps orphans, over a process that waits for ever.
        self.holder = [tini, "-s", "--", "/usr/bin/sleep", "infinity"]
        # Capsule n's uids start at uid_base + n * UID_RANGE: two agents on a host need bases apart.
        self.uid_base = uid_base
        # Each capsule's cgroup is <hierarchy>/<cgroup_root>/<sandbox_id>, as runc makes it.
        self.cgroup_root = cgroup_root
        self.state_dir = state_dir
        self.defaults = defaults
        self.runc_root = state_dir / "runc"
        self.process_dir = state_dir / "exec"
        self.disk_problem = disks.problem()
        # Set by `connect`; None: each capsule's namespace has only its loopback.
        self.networks: CapsuleNetworks | None = None
        self.network_problem = "not set up yet"
        self._holders: dict[str, int] = {}
        self._slots: dict[str, int] = {}
        self._events = _memory_events_file(cgroup_root)
        self.cgroups = cgroup_version()

    # Setup and probing

    def _prepare_dirs(self) -> None:
        for path in (self.state_dir, self.runc_root, self.process_dir):
            path.mkdir(parents=True, exist_ok=True)
            path.chmod(0o700)

    def probe(self, sandboxes_root: Path) -> str | None:
        """Run a container the way capsules will; return why it failed, or None. Blocking."""
        if os.geteuid() != 0:
            return "runc needs the agent to run as root (it maps each capsule to its own uid range)"
        if not self.cgroups:
            return "no cgroup memory controller is mounted (neither cgroup v2 nor v1)"
        self._prepare_dirs()
        sandboxes_root.mkdir(parents=True, exist_ok=True)
        probe = Path(tempfile.mkdtemp(prefix=".probe-", dir=sandboxes_root))
        container = f"{CONTAINER_PREFIX}probe-{os.getpid()}"
        try:
            probe.chmod(0o711)
            base = self.uid_base  # the first slot's range, unused until a capsule takes it
            for name in ("home", "tmp", "root"):
                (probe / disks.MOUNT / name).mkdir(parents=True)
            bundle.write(probe, "probe", base, Limits(1, 64, 64, 64), ["/bin/true"], self.cgroup_root, "")
            result = self._runc_sync(["run", "--no-new-keyring", "--bundle", str(probe), container])
            if result:
                return result
        finally:
            self._runc_sync(["delete", "--force", container])
            shutil.rmtree(probe, ignore_errors=True)
        return None

    def start(self) -> None:
        """Once the runtime is chosen: adopt orphans of runc as our children (blocking)."""
        self._prepare_dirs()
        _set_child_subreaper()

    def isolation(self) -> dict[str, dict[str, Any]]:
        limits_reason = f"{self.cgroups} memory, pids and CPU limits per capsule"
        if self.disk_problem:
            limits_reason += f"; disk sizes NOT enforced: {self.disk_problem}"
        network_reason = (
            self.networks.describe()
            if self.networks is not None
            else "own network namespace per capsule, loopback only: no outbound network "
            f"({self.network_problem})"
        )
        return {
            "runtime": {"on": True, "reason": f"runc container per capsule, own uid range ({self.runc})"},
            "network": {"on": True, "reason": network_reason},
            "limits": {"on": not self.disk_problem, "reason": limits_reason},
            "seccomp": {"on": True, "reason": f"{len(seccomp.DENIED)} system calls denied, no_new_privs"},
        }

    # Capsule directories

    def prepare_sandbox(self, root: Path) -> None:
        (root / disks.MOUNT).mkdir(mode=0o755, exist_ok=True)

    def launch_spec(self, sandbox_id: str, root: Path, request: LaunchRequest) -> LaunchSpec:
        raise NotImplementedError("the OCI runtime starts processes with runc exec (see spawn)")

    def _slot(self, root: Path) -> int:
        """The capsule's uid range, chosen once and kept in `<sandbox>/uid-slot`."""
        path = root / "uid-slot"
        with contextlib.suppress(FileNotFoundError, ValueError):
            return int(path.read_text())
        used = set()
        for other in root.parent.iterdir():
            with contextlib.suppress(OSError, ValueError):
                used.add(int((other / "uid-slot").read_text()))
        free = next((n for n in range(MAX_SLOTS) if n not in used), None)
        if free is None:
            raise ResourceExhausted(f"this host holds at most {MAX_SLOTS} capsules")
        path.write_text(f"{free}\n")
        return free

    def _base(self, root: Path) -> int:
        return self.uid_base + self._slot(root) * UID_RANGE

    # The container

    def _resolv_conf(self) -> str:
        if self.networks is None:
            return "# This capsule has no outbound network, and so no DNS.\n"
        return self.networks.resolv_conf()

    def _runc_sync(self, args: list[str]) -> str | None:
        """Run runc (blocking); return its error, or None."""
        argv = [self.runc, "--root", str(self.runc_root), *args]
        try:
            result = subprocess.run(  # noqa: S603 - fixed argv, no shell
                argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=RUNC_TIMEOUT, check=False
            )
        except (OSError, subprocess.SubprocessError) as exc:
            return f"{self.runc} failed to run: {exc}"
        if result.returncode != 0:
            return _runc_error(result.stderr) or f"runc {args[0]} exited with {result.returncode}"
        return None

    async def _runc(
        self,
        *args: str,
        log_file: Path | None = None,
        stdio: tuple[int, int] | None = None,
        stdin: int | None = None,
    ) -> None:
        """Run runc to completion; raise RuncFailed with its message if it fails.

        `stdio`: the stdout and stderr runc gets, which a detached `runc exec` without a terminal
        hands on to the process it starts (then `log_file` must take runc's own messages); so is
        `stdin`, else /dev/null.
        """
        argv = [self.runc, "--root", str(self.runc_root)]
        if log_file is not None:
            argv += ["--log", str(log_file)]
        stdout: int = asyncio.subprocess.DEVNULL
        stderr: int = asyncio.subprocess.DEVNULL if log_file is not None else asyncio.subprocess.PIPE
        if stdio is not None:
            stdout, stderr = stdio
        process = await asyncio.create_subprocess_exec(
            *argv,
            *args,
            stdin=asyncio.subprocess.DEVNULL if stdin is None else stdin,
            stdout=stdout,
            stderr=stderr,
        )
        try:
            _out, err = await asyncio.wait_for(process.communicate(), RUNC_TIMEOUT)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            raise RuncFailed(f"runc {args[0]} did not finish within {RUNC_TIMEOUT:.0f}s") from None
        if process.returncode != 0:
            text = err or b""
            if log_file is not None:
                with contextlib.suppress(OSError):
                    text = await run_blocking(log_file.read_bytes)
            raise RuncFailed(_runc_error(text) or f"runc {args[0]} exited with {process.returncode}")

    @staticmethod
    def container(sandbox_id: str) -> str:
        return CONTAINER_PREFIX + sandbox_id

    def connect(self, network: NetworkConfig) -> None:
        networks = CapsuleNetworks(
            self.state_dir / "network", network.pool, table=network.table, prefix=network.prefix
        )
        problem = networks.probe()
        if problem is not None:
            self.network_problem = problem
            log.warning(
                "capsules get NO outbound network (%s): each still has a network namespace of its "
                "own with only its loopback, so nothing of the host is reachable either",
                problem,
            )
            return
        self.networks = networks
        self.network_problem = ""

    async def recover(self) -> None:
        if self.networks is not None:
            # The networks of a crashed run: each capsule gets its own again as it starts.
            cleaned = await self.networks.clean_leftovers(())
            if cleaned:
                log.info("removed the networks an earlier run left for %d capsules", len(cleaned))

    async def maintain(self) -> None:
        if self.networks is not None:
            # `nft flush ruleset` (a firewall reload) removes the capsule filters with the rest.
            await self.networks.restore()

    def close(self) -> None:
        if self.networks is not None:
            self.networks.close()

    def own_freezer(self) -> Freezer:
        return OciFreezer(self)

    def limits_for(self, vcpus: int, memory_mb: int, disk_mb: int) -> Limits:
        return self.defaults.limits(vcpus, memory_mb, disk_mb)

    def alive(self, sandbox_id: str) -> bool:
        holder = self._holders.get(sandbox_id)
        if holder is None:
            return False
        try:
            # WNOWAIT: the zombie stays until stop_environment reaps it.
            return os.waitid(os.P_PID, holder, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None
        except ChildProcessError:
            return False

    def port_namespace(self, sandbox_id: str) -> str:
        # The container init's namespace: the one every process of the capsule is in.
        holder = self._holders.get(sandbox_id)
        if holder is None or not self.alive(sandbox_id):
            raise FailedPrecondition(f"capsule {sandbox_id}'s environment is not running")
        return f"/proc/{holder}/ns/net"

    async def set_policy(self, sandbox_id: str, policy: dict[str, Any] | None) -> None:
        if self.networks is not None and sandbox_id in self._holders:
            try:
                await self.networks.set_policy(sandbox_id, self.networks.policy(policy))
            except NetworkUnavailable as exc:
                raise AgentError(f"cannot change the network policy of capsule {sandbox_id}: {exc}") from exc

    def limits_of(self, root: Path) -> Limits | None:
        with contextlib.suppress(OSError, ValueError, TypeError):
            return Limits(**json.loads((root / "limits.json").read_text()))
        return None

    def save_limits(self, root: Path, limits: Limits) -> None:
        path = root / "limits.json"
        path.write_text(json.dumps(asdict(limits)))
        path.chmod(0o600)

    async def start_environment(
        self, sandbox_id: str, root: Path, policy: dict[str, Any] | None, paused: bool
    ) -> None:
        """Start the capsule's container (again) from its directory; frozen if `paused`."""
        limits = self.limits_of(root) or self.defaults.limits(0, 0, 0)
        container = self.container(sandbox_id)
        try:
            base = await run_blocking(self._base, root)
            await run_blocking(bundle.prepare_disk, root, base, limits, self.disk_problem is None)
            await run_blocking(
                bundle.write,
                root,
                sandbox_id,
                base,
                limits,
                self.holder,
                self.cgroup_root,
                self._resolv_conf(),
            )
        except OSError as exc:
            raise AgentError(f"cannot prepare capsule {sandbox_id}: {exc}") from exc
        with contextlib.suppress(RuncFailed):
            await self._runc("delete", "--force", container)
        pid_file = root / "init.pid"
        log_file = self.process_dir / f"run-{uuid.uuid4().hex}.log"
        try:
            await self._runc(
                "run",
                # Else runc makes a session keyring for the init and one per exec, each charged to
                # the capsule's host uid, and the kernel's key quota (kernel.keys.maxkeys, 200 by
                # default) refuses the 199th terminal. The processes inherit the agent's session
                # keyring instead, which they cannot reach: seccomp denies the key system calls.
                "--no-new-keyring",
                "--detach",
                "--bundle",
                str(root),
                "--pid-file",
                str(pid_file),
                container,
                log_file=log_file,
            )
        except RuncFailed as exc:
            raise AgentError(f"cannot start capsule {sandbox_id}: {exc.message}") from exc
        finally:
            log_file.unlink(missing_ok=True)
        self._holders[sandbox_id] = int(pid_file.read_text())
        try:
            if self.networks is not None:
                await self.networks.attach(
                    sandbox_id, f"/proc/{self._holders[sandbox_id]}/ns/net", self.networks.policy(policy)
                )
            if paused:
                await self._runc("pause", container)
        except NetworkUnavailable as exc:
            await self.stop_environment(sandbox_id, root)
            raise AgentError(f"cannot give capsule {sandbox_id} its network: {exc}") from exc
        except BaseException:
            await self.stop_environment(sandbox_id, root)
            raise
        log.info("capsule %s started (%s, uids from %d)", sandbox_id, limits.describe(), base)

    async def kill_processes(self, sandbox_id: str) -> int:
        """Kill every process of the capsule and remove its container; returns how many there were.

        Nothing to do (no runc call) once that is done: the lifecycle asks twice on a destroy,
        through the freezer and through stop_environment.
        """
        pids = await run_blocking(self.procs, sandbox_id)
        holder = self._holders.pop(sandbox_id, None)
        if pids or holder is not None:
            with contextlib.suppress(RuncFailed):
                await self._runc("delete", "--force", self.container(sandbox_id))
        if holder is not None:
            # Our child (subreaper): reaped here, or it would stay a zombie.
            with contextlib.suppress(ChildProcessError):
                await run_blocking(os.waitpid, holder, 0)
        return len(pids)

    async def stop_environment(self, sandbox_id: str, root: Path | None) -> int:
        """Kill everything in the capsule, remove its container, network and (with `root`) disk."""
        killed = await self.kill_processes(sandbox_id)
        if self.networks is not None:
            await self.networks.detach(sandbox_id)
        if root is not None:
            await run_blocking(disks.detach, root)
        return killed

    def procs(self, sandbox_id: str) -> list[int]:
        for mount, fstype, options in _mounts():
            if (fstype == "cgroup" and "pids" in options) or fstype == "cgroup2":
                path = Path(mount) / self.cgroup_root / sandbox_id / "cgroup.procs"
                with contextlib.suppress(OSError):
                    return [int(line) for line in path.read_text().split()]
        return []

    def oom_kills(self, sandbox_id: str) -> int:
        if self._events is None:
            return 0
        parent, name = self._events
        try:
            text = (parent / sandbox_id / name).read_text()
        except OSError:
            return 0
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill" and value.strip().isdigit():
                return int(value)
        return 0

    def cpu_and_memory(self, sandbox_id: str) -> tuple[int | None, int | None]:
        return usage.cgroup_readings(self.cgroup_root, sandbox_id, self.cgroups)

    async def pause(self, sandbox_id: str) -> None:
        await self._runc("pause", self.container(sandbox_id))

    async def resume(self, sandbox_id: str) -> None:
        await self._runc("resume", self.container(sandbox_id))

    async def release(self, pids: Sequence[int]) -> None:
        """Let killed processes of a frozen capsule die: a v1-frozen process ignores even SIGKILL."""
        if self.cgroups != "cgroup1":
            return
        root = _v1_base("")  # the v1 freezer hierarchy's root, which is never frozen
        if root is None:
            return
        for pid in pids:
            with contextlib.suppress(OSError):
                await run_blocking((root / "cgroup.procs").write_text, str(pid))

    # Terminals and processes

    async def _runc_exec(
        self,
        sandbox_id: str,
        request: LaunchRequest,
        process: dict[str, Any],
        options: list[str],
        stdio: tuple[int, int] | None = None,
        stdin: int | None = None,
    ) -> int:
        """`runc exec --detach` of `process` into the capsule, with `options`; its host pid.

        The process file is 0600 before a byte of the environment is in it: envs appear on no
        command line. The process becomes our child once runc exits (we are a subreaper).
        """
        name = uuid.uuid4().hex
        process_file = self.process_dir / f"{name}.json"
        pid_file = self.process_dir / f"{name}.pid"
        log_file = self.process_dir / f"{name}.log"
        try:
            descriptor = os.open(process_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as handle:
                json.dump(process, handle)
            try:
                await self._runc(
                    "exec",
                    "--detach",
                    *options,
                    "--pid-file",
                    str(pid_file),
                    "--process",
                    str(process_file),
                    self.container(sandbox_id),
                    log_file=log_file,
                    stdio=stdio,
                    stdin=stdin,
                )
            except RuncFailed as exc:
                if STOPPED_CONTAINER in exc.message:
                    raise EnvironmentStopped(
                        f"cannot start '{request.cmd}': capsule {sandbox_id}'s environment has stopped "
                        "(its init exited)"
                    ) from exc
                raise FailedPrecondition(f"cannot start '{request.cmd}': {exc.message}") from exc
            return int(pid_file.read_text())
        finally:
            for path in (process_file, pid_file, log_file):
                path.unlink(missing_ok=True)

    async def spawn(
        self,
        sandbox_id: str,
        root: Path,
        request: LaunchRequest,
        cols: int,
        rows: int,
        cgroup_procs: str | None,
    ) -> Spawned:
        """`runc exec` the command under a terminal of the capsule's own devpts; we get its master."""
        process = await run_blocking(bundle.process, sandbox_id, root, request, cols, rows)
        # An abstract socket: no path length limit (a deep data directory), nothing to delete, and
        # out of every capsule's reach (each has a network namespace of its own).
        console = f"wrenn-console-{uuid.uuid4().hex}"
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind("\0" + console)
            listener.listen(1)
            listener.setblocking(False)
            # "@": Go's spelling of an abstract address.
            pid = await self._runc_exec(
                sandbox_id, request, process, ["--tty", "--console-socket", "@" + console]
            )
            master = await asyncio.wait_for(_receive_console(listener), CONSOLE_TIMEOUT)
        finally:
            listener.close()
        os.set_blocking(master, False)
        return Spawned(pid=pid, master_fd=master)

    async def spawn_piped(
        self,
        sandbox_id: str,
        root: Path,
        request: LaunchRequest,
        cgroup_procs: str | None,
        stdin: bool = False,
    ) -> Piped:
        """`runc exec --detach` the command with our pipes as its stdout and stderr (and stdin,
        if asked for, else /dev/null): runc hands them on and exits, and the process (a session
        leader) becomes our child (subreaper)."""
        process = await run_blocking(bundle.process, sandbox_id, root, request)
        (out_read, out_write), (err_read, err_write), inp = stdio_pipes(stdin)
        in_read, in_write = inp if inp is not None else (None, None)
        try:
            pid = await self._runc_exec(
                sandbox_id, request, process, [], stdio=(out_write, err_write), stdin=in_read
            )
        except BaseException:
            close_quietly(out_read, err_read, *([in_write] if in_write is not None else []))
            raise
        finally:
            close_quietly(out_write, err_write, *([in_read] if in_read is not None else []))
        return piped(pid, out_read, err_read, in_write)

    own_pid_namespace = True

    def capsule_pids(self, sandbox_id: str, leaders: list[int]) -> list[int]:
        return self.procs(sandbox_id)


async def _receive_console(listener: socket.socket) -> int:
    loop = asyncio.get_running_loop()
    connection, _address = await loop.sock_accept(listener)
    with connection:
        # Only runc, as root, hands us the terminal: not another host user who found the name.
        credentials = connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _pid, uid, _gid = struct.unpack("3i", credentials)
        if uid != 0:
            raise AgentError(f"a process of uid {uid}, not runc, connected to the console socket")
        connection.setblocking(True)
        _message, fds, _flags, _address = await run_blocking(socket.recv_fds, connection, 1024, 1)
    if not fds:
        raise AgentError("runc sent no terminal for the new process")
    for extra in fds[1:]:
        os.close(extra)
    return fds[0]


def _runc_error(raw: bytes) -> str:
    """runc's own message from its stderr or JSON log: the last `msg` it logged at error level."""
    message = ""
    for line in raw.decode(errors="replace").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            entry = None
        if isinstance(entry, dict):
            if entry.get("level") in ("error", "fatal") and entry.get("msg"):
                message = str(entry["msg"])
        else:
            message = line.removeprefix("ERRO[0000] ")
    return message


class OciFreezer(Freezer):
    """Pause by runc (the cgroup freezer of the container); kill by deleting the container."""

    name = "runc"

    def __init__(self, runtime: OciRuntime) -> None:
        self.runtime = runtime

    def describe(self) -> str:
        return f"runc pause/resume (the container's {self.runtime.cgroups} freezer)"

    async def freeze(self, sandbox_id: str, leaders: Sequence[int]) -> None:
        try:
            await self.runtime.pause(sandbox_id)
        except RuncFailed as exc:
            raise OSError(exc.message) from exc

    async def thaw(self, sandbox_id: str, leaders: Sequence[int]) -> None:
        try:
            await self.runtime.resume(sandbox_id)
        except RuncFailed as exc:
            raise OSError(exc.message) from exc

    async def kill_all(self, sandbox_id: str, leaders: Sequence[int]) -> int:
        return await self.runtime.kill_processes(sandbox_id)

    async def release(self, sandbox_id: str, pids: Sequence[int]) -> None:
        await self.runtime.release(pids)


def find_tools() -> tuple[str, str] | str:
    """(runc, tini) paths, or why they are missing. tini must be under /usr, which capsules see."""
    runc = shutil.which("runc")
    tini = shutil.which("tini") or ("/usr/bin/tini" if os.access("/usr/bin/tini", os.X_OK) else None)
    if runc is None:
        return "runc is not installed (Debian package runc)"
    if tini is None or not tini.startswith("/usr/"):
        return "tini is not installed under /usr (Debian package tini)"
    return runc, tini
