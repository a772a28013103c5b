"""The bubblewrap runtime: each PTY process runs in its own user, PID, IPC, UTS and mount namespaces.

The sessions of one capsule share its directory (the same home and /tmp are bound into each),
not their processes.

When the agent runs as root, bwrap itself runs as an unprivileged host uid (nobody by default):
a sandbox user, even `root` inside, is then that uid on the host, so it cannot write the host's
/usr or /etc even after remounting them inside its own mount namespace.
"""

from __future__ import annotations

import logging
import os
import posixpath
import pwd
import stat
import subprocess
from pathlib import Path

from hostagent.errors import FailedPrecondition, InvalidArgument
from hostagent.runtime import BASE_ENV, LaunchRequest, Runtime
from hostagent.spawn import LaunchSpec

log = logging.getLogger(__name__)

HOME = "/home/user"
# Root's own home, as in Wrenn's capsules: where exec and file calls run by default.
ROOT_HOME = "/root"
# The sandbox's own /tmp, bound to the capsule's tmp/, not the host's.
TMP = "/tmp"  # noqa: S108
# name -> (uid, gid) inside the sandbox, and each one's home (both on the capsule's disk).
USERS = {"root": (0, 0), "user": (1000, 1000)}
HOMES = {"root": ROOT_HOME, "user": HOME}
# The sandbox's /etc/passwd and /etc/group.
USER_TABLE = (
    "root:x:0:0:root:/root:/bin/bash\n"
    "user:x:1000:1000:user:/home/user:/bin/bash\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
)
GROUP_TABLE = "root:x:0:\nuser:x:1000:\nnogroup:x:65534:\n"
SYSTEM_DIRS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
PROBE_TIMEOUT = 15.0
MAX_SYMLINKS = 40
# util-linux's setsid, from the sandbox's (read-only) /usr: gives the command a session with
# the PTY as its controlling terminal inside the pid namespace (see launch_spec).
SETSID = "/usr/bin/setsid"


def _system_dir_args() -> list[str]:
    """Mirror /bin, /lib... as the host has them: symlinks on merged-usr Debian, else read-only binds."""
    args: list[str] = []
    for name in SYSTEM_DIRS:
        path = f"/{name}"
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    return args


class BwrapRuntime(Runtime):
    name = "bwrap"

    def __init__(self, binary: str, sandbox_uid: int) -> None:
        self.binary = binary
        self.host_uid: int | None = None
        self.host_gid: int | None = None
        if os.geteuid() == 0:
            # Never run the sandbox as host root: see the module docstring.
            self.host_uid = sandbox_uid
            try:
                self.host_gid = pwd.getpwuid(sandbox_uid).pw_gid
            except KeyError:
                self.host_gid = sandbox_uid
        self._system_args = _system_dir_args()

    def probe(self, sandboxes_root: Path) -> str | None:
        """Run a trivial sandbox the way sessions will; return why it failed, or None."""
        if not os.access(SETSID, os.X_OK):
            return f"{SETSID} (util-linux) is missing; sessions need it to own their terminal"
        sandboxes_root.mkdir(parents=True, exist_ok=True)
        argv = [
            self.binary,
            *self._namespace_args("probe", 1000),
            *self._system_args,
            "--ro-bind",
            "/usr",
            "/usr",
            "--ro-bind",
            str(sandboxes_root),
            "/mnt",
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--",
            "/bin/true",
        ]
        try:
            result = subprocess.run(  # noqa: S603 - fixed argv, no shell
                argv,
                capture_output=True,
                timeout=PROBE_TIMEOUT,
                user=self.host_uid,
                group=self.host_gid,
                extra_groups=[] if self.host_uid is not None else None,
                check=False,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            return f"{self.binary} failed to run: {exc}"
        if result.returncode != 0:
            detail = result.stderr.decode(errors="replace").strip()
            if self.host_uid is not None and "Permission denied" in detail:
                detail += (
                    f" (bwrap runs as host uid {self.host_uid}, which needs search (x) permission "
                    f"on every directory above {sandboxes_root})"
                )
            return f"bwrap exited with {result.returncode}: {detail}"
        return None

    def prepare_sandbox(self, root: Path) -> None:
        super().prepare_sandbox(root)
        for name, text in (("passwd", USER_TABLE), ("group", GROUP_TABLE)):
            path = root / name
            path.write_text(text)
            path.chmod(0o644)
        (root / "root").mkdir(mode=0o700, exist_ok=True)
        if self.host_uid is not None and self.host_gid is not None:
            for name in ("home", "tmp", "root"):
                os.chown(root / name, self.host_uid, self.host_gid)

    def _namespace_args(self, sandbox_id: str, uid: int) -> list[str]:
        gid = uid
        args = ["--unshare-user", "--uid", str(uid), "--gid", str(gid)]
        args += ["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--hostname", sandbox_id]
        if uid != 0:
            args += ["--cap-drop", "ALL"]
        return args

    def launch_spec(self, sandbox_id: str, root: Path, request: LaunchRequest) -> LaunchSpec:
        uid, _gid, cwd, env = session_of(sandbox_id, request)
        check_startable(SandboxView(root, self._system_args), request.cmd, cwd, env.get("PATH", ""))
        argv = [self.binary, *self._namespace_args(sandbox_id, uid)]
        argv += ["--ro-bind", "/usr", "/usr", *self._system_args, "--ro-bind", "/etc", "/etc"]
        argv += ["--ro-bind", str(root / "passwd"), "/etc/passwd"]
        argv += ["--ro-bind", str(root / "group"), "/etc/group"]
        argv += ["--proc", "/proc", "--dev", "/dev"]
        argv += ["--bind", str(root / "home"), HOME, "--bind", str(root / "tmp"), TMP]
        argv += ["--bind", str(root / "root"), ROOT_HOME]
        # No --new-session: the PTY must stay the controlling terminal for job control.
        argv += ["--die-with-parent", "--chdir", cwd, "--clearenv"]
        for name, value in env.items():
            argv += ["--setenv", name, value]
        if request.terminal:
            # The PTY becomes the controlling terminal inside the pid namespace, by a session the
            # command leads there: had the agent's child taken it outside, the shell would find a
            # foreground process group it cannot see (0), and give the terminal back to it when
            # it execs, failing: `exec bash` in dash ended with "Cannot set tty process group".
            argv += ["--", SETSID, "--ctty", request.cmd, *request.args]
        else:
            # A process with pipes: the agent's child already leads a session of its own.
            argv += ["--", request.cmd, *request.args]
        return LaunchSpec(
            file=self.binary,
            argv=argv,
            env={},
            cwd="/",
            uid=self.host_uid,
            gid=self.host_gid,
            groups=[],
            display=request.cmd,
            terminal_inside=request.terminal,
        )


def session_of(sandbox_id: str, request: LaunchRequest) -> tuple[int, int, str, dict[str, str]]:
    """The uid, gid, working directory and environment of a session in a sandbox."""
    user = request.user or "user"
    if user not in USERS:
        raise InvalidArgument(f"unknown user '{user}'")
    uid, gid = USERS[user]
    home = HOMES[user]
    cwd = posixpath.normpath(posixpath.join(home, request.cwd)) if request.cwd else home
    env = {**BASE_ENV, "HOME": home, "USER": user, "LOGNAME": user, "SHELL": "/bin/bash"}
    env["HOSTNAME"] = sandbox_id
    env.update(request.envs)
    return uid, gid, cwd, env


# bwrap and runc report a missing command only as text and an exit status, so look the command
# and directory up first, through the same mounts the sandbox will have.


def check_startable(view: SandboxView, cmd: str, cwd: str, path_env: str) -> None:
    if view.kind(cwd) not in ("dir", "unknown"):
        raise FailedPrecondition(
            f"cannot start '{cmd}': cannot change directory to '{cwd}': No such file or directory"
        )
    if "/" in cmd:
        candidates = [posixpath.join(cwd, cmd)]
    else:
        candidates = [posixpath.join(cwd, posixpath.join(d or ".", cmd)) for d in path_env.split(":")]
    if not any(view.kind(c) in ("exec", "unknown") for c in candidates):
        raise FailedPrecondition(f"cannot start '{cmd}': No such file or directory")


class SandboxView:
    """Resolves sandbox paths to host paths through the bwrap mounts, following symlinks."""

    def __init__(self, root: Path, system_args: list[str]) -> None:
        self.mounts = {
            HOME: str(root / "home"),
            TMP: str(root / "tmp"),
            ROOT_HOME: str(root / "root"),
            "/usr": "/usr",
            "/etc": "/etc",
        }
        self.links: dict[str, str] = {}
        for i, arg in enumerate(system_args):
            if arg == "--symlink":
                self.links[system_args[i + 2]] = system_args[i + 1]
            elif arg == "--ro-bind":
                self.mounts[system_args[i + 2]] = system_args[i + 1]

    def _host(self, path: str) -> str | None:
        for mount, host in self.mounts.items():
            if path == mount or path.startswith(mount + "/"):
                return host + path[len(mount) :]
        return None

    def kind(self, path: str) -> str:
        """'dir', 'exec', 'file', 'missing' or 'unknown' (/proc, /dev: not worth guessing)."""
        parts = [p for p in posixpath.normpath(path).split("/") if p]
        current = "/"
        hops = 0
        while parts:
            current = posixpath.normpath(posixpath.join(current, parts.pop(0)))
            if current in ("/proc", "/dev") or current.startswith(("/proc/", "/dev/")):
                return "unknown"
            target = self.links.get(current)
            host = self._host(current)
            if target is None and host is not None and os.path.islink(host):
                target = os.readlink(host)
            if target is not None:
                hops += 1
                if hops > MAX_SYMLINKS:
                    return "missing"
                parts = [p for p in target.split("/") if p] + parts
                current = "/" if target.startswith("/") else posixpath.dirname(current)
                continue
            if host is None:
                # Directories bwrap creates on its own tmpfs root, such as /home.
                if any(m.startswith(current.rstrip("/") + "/") for m in (*self.mounts, *self.links)):
                    continue
                return "missing"
            if not os.path.exists(host):
                return "missing"
        host = self._host(current)
        if host is None:
            return "dir"
        mode = os.stat(host).st_mode
        if stat.S_ISDIR(mode):
            return "dir"
        return "exec" if stat.S_ISREG(mode) and mode & 0o111 else "file"
