"""What runc starts a capsule from: its bundle (rootfs skeleton, own /etc files, config.json),
its disk's home and /tmp, and the process file of each terminal.

All blocking; the OCI runtime (`hostagent.oci`) calls these in threads.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from hostagent import disks, seccomp
from hostagent.bwrap import (
    GROUP_TABLE,
    HOME,
    ROOT_HOME,
    TMP,
    USER_TABLE,
    USERS,
    SandboxView,
    check_startable,
    session_of,
)
from hostagent.runtime import BASE_ENV, LaunchRequest, Limits

UID_RANGE = 65536
CPU_PERIOD_US = 100_000
SHM_MB = 64
# Paths inside the capsule (not the agent's own temporary directories).
SHM = "/dev/shm"  # noqa: S108 - a path inside the capsule
VAR_TMP = "/var/tmp"  # noqa: S108 - a path inside the capsule
# Where the capsule's disk appears inside it: (path inside, directory on the disk).
DISK_MOUNTS = ((HOME, "home"), (ROOT_HOME, "root"), (TMP, "tmp"), (VAR_TMP, "tmp"))
SYSTEM_LINKS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
# The host /etc entries a capsule sees (read-only), where they exist: what programs need to run,
# and nothing of the host's services (their configuration may hold passwords).
ETC_ENTRIES = (
    "alternatives",
    "bash.bashrc",
    "ca-certificates",
    "ca-certificates.conf",
    "debian_version",
    "environment",
    "gai.conf",
    "host.conf",
    "inputrc",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "locale.alias",
    "localtime",
    "login.defs",
    "magic",
    "mime.types",
    "networks",
    "nsswitch.conf",
    "os-release",
    "perl",
    "profile",
    "profile.d",
    "protocols",
    "python3",
    "python3.11",
    "services",
    "shells",
    "skel",
    "ssl",
    "terminfo",
    "timezone",
    "vim",
)
# Written per capsule, bound over the list above.
OWN_ETC = ("passwd", "group", "hosts", "hostname", "resolv.conf")
ROOT_CAPABILITIES = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_RAW",
    "CAP_SYS_CHROOT",
    "CAP_AUDIT_WRITE",
    "CAP_SETFCAP",
]


def config(
    root: Path, sandbox_id: str, base: int, limits: Limits, init: list[str], cgroup_root: str
) -> dict[str, Any]:
    """The container's config.json: its init, mounts, namespaces, uid range, limits and filter."""
    etc = root / "etc"
    mounts: list[dict[str, Any]] = [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {
            "destination": "/dev",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "strictatime", "mode=755", "size=1m"],
        },
        {
            "destination": "/dev/pts",
            "type": "devpts",
            "source": "devpts",
            "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"],
        },
        {
            "destination": SHM,
            "type": "tmpfs",
            "source": "shm",
            "options": [
                "nosuid",
                "noexec",
                "nodev",
                "mode=1777",
                f"size={min(SHM_MB, limits.memory_mb // 2)}m",
            ],
        },
        {
            "destination": "/usr",
            "type": "bind",
            "source": "/usr",
            "options": ["rbind", "ro", "nosuid", "nodev"],
        },
    ]
    for name in ETC_ENTRIES:
        host = Path("/etc") / name
        if host.exists() and not host.is_symlink():
            mounts.append(
                {
                    "destination": f"/etc/{name}",
                    "type": "bind",
                    "source": str(host),
                    "options": ["rbind", "ro", "nosuid", "nodev"],
                }
            )
    mounts.extend(
        {
            "destination": f"/etc/{name}",
            "type": "bind",
            "source": str(etc / name),
            "options": ["bind", "ro", "nosuid", "nodev"],
        }
        for name in OWN_ETC
    )
    disk = root / disks.MOUNT
    for inside, name in DISK_MOUNTS:
        mounts.append(
            {
                "destination": inside,
                "type": "bind",
                "source": str(disk / name),
                "options": ["rbind", "rw", "nosuid", "nodev"],
            }
        )
    kinds = ("pid", "ipc", "uts", "mount", "user", "cgroup", "network")
    namespaces = [{"type": kind} for kind in kinds]
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": init,
            "env": [f"PATH={BASE_ENV['PATH']}"],
            "cwd": "/",
            "noNewPrivileges": True,
            "capabilities": {
                key: [] for key in ("bounding", "effective", "permitted", "inheritable", "ambient")
            },
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": sandbox_id,
        "mounts": mounts,
        "linux": {
            "uidMappings": [{"containerID": 0, "hostID": base, "size": UID_RANGE}],
            "gidMappings": [{"containerID": 0, "hostID": base, "size": UID_RANGE}],
            "namespaces": namespaces,
            "cgroupsPath": f"/{cgroup_root}/{sandbox_id}",
            "resources": {
                "memory": {"limit": limits.memory_mb << 20, "swap": limits.memory_mb << 20},
                "pids": {"limit": limits.pids},
                "cpu": {"quota": limits.vcpus * CPU_PERIOD_US, "period": CPU_PERIOD_US},
            },
            "seccomp": seccomp.profile(),
            "maskedPaths": [
                "/proc/acpi",
                "/proc/asound",
                "/proc/kcore",
                "/proc/keys",
                "/proc/latency_stats",
                "/proc/timer_list",
                "/proc/timer_stats",
                "/proc/sched_debug",
                "/proc/scsi",
                "/sys/firmware",
            ],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
        },
    }


def write(
    root: Path,
    sandbox_id: str,
    base: int,
    limits: Limits,
    init: list[str],
    cgroup_root: str,
    resolv_conf: str,
) -> None:
    """The container's bundle: rootfs skeleton, its own /etc files, config.json. Blocking."""
    rootfs = root / "rootfs"
    rootfs.mkdir(mode=0o755, exist_ok=True)
    for name in ("proc", "dev", "usr", "etc", "home/user", "root", "tmp", "var/tmp"):
        (rootfs / name).mkdir(parents=True, exist_ok=True)
    for name in SYSTEM_LINKS:
        host, link = Path("/") / name, rootfs / name
        if host.is_symlink() and not link.is_symlink():
            link.symlink_to(os.readlink(host))
    for name in ETC_ENTRIES:
        host, target = Path("/etc") / name, rootfs / "etc" / name
        if host.is_symlink():
            if not target.is_symlink():
                target.symlink_to(os.readlink(host))
        elif host.is_dir():
            target.mkdir(exist_ok=True)
        elif host.exists():
            target.touch(exist_ok=True)
    etc = root / "etc"
    etc.mkdir(mode=0o755, exist_ok=True)
    files = {
        "passwd": USER_TABLE,
        "group": GROUP_TABLE,
        "hosts": f"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n127.0.1.1\t{sandbox_id}\n",
        "hostname": f"{sandbox_id}\n",
        "resolv.conf": resolv_conf,
    }
    for name, text in files.items():
        (etc / name).write_text(text)
        (etc / name).chmod(0o644)
        (rootfs / "etc" / name).touch(exist_ok=True)
    settings = config(root, sandbox_id, base, limits, init, cgroup_root)
    config_path = root / "config.json"
    config_path.write_text(json.dumps(settings, indent=1))
    config_path.chmod(0o600)


def prepare_disk(root: Path, base: int, limits: Limits, enforce: bool) -> None:
    """The capsule's disk, mounted, with its home (of `user`) and /tmp. Blocking."""
    mount = disks.attach(root, limits.disk_mb, base, enforce=enforce)
    uid, gid = USERS["user"]
    home, tmp = mount / "home", mount / "tmp"
    if not home.exists():
        home.mkdir()
        os.chown(home, base + uid, base + gid)
        home.chmod(0o755)
    if not tmp.exists():
        tmp.mkdir()
        os.chown(tmp, base, base)
        tmp.chmod(0o1777)
    root_home = mount / "root"
    if not root_home.exists():
        root_home.mkdir()
        os.chown(root_home, base, base)
        root_home.chmod(0o700)


def process(
    sandbox_id: str, root: Path, request: LaunchRequest, cols: int = 0, rows: int = 0
) -> dict[str, Any]:
    """The process file of a terminal (or, `request.terminal` false, of a process with pipes):
    `runc exec --process` reads it (envs stay off command lines)."""
    uid, gid, cwd, env = session_of(sandbox_id, request)
    view = SandboxView(root, [])
    disk = root / disks.MOUNT
    view.mounts.update({inside: str(disk / name) for inside, name in DISK_MOUNTS})
    for name in SYSTEM_LINKS:
        if os.path.islink(f"/{name}"):
            view.links[f"/{name}"] = os.readlink(f"/{name}")
    check_startable(view, request.cmd, cwd, env.get("PATH", ""))
    caps = ROOT_CAPABILITIES if uid == 0 else []
    terminal: dict[str, Any] = {"terminal": False}
    if request.terminal:
        terminal = {"terminal": True, "consoleSize": {"height": rows, "width": cols}}
    return {
        **terminal,
        "user": {"uid": uid, "gid": gid, "additionalGids": []},
        "args": [request.cmd, *request.args],
        "env": [f"{name}={value}" for name, value in env.items()],
        "cwd": cwd,
        "noNewPrivileges": True,
        "capabilities": dict.fromkeys(("bounding", "effective", "permitted"), caps)
        | {"inheritable": [], "ambient": []},
    }
