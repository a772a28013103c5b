"""A capsule's writable space: an ext4 image of `disk_size_mb`, loop-mounted at `<sandbox>/disk`.

The image is sparse, so a capsule costs host disk only for what it writes, and writing past its
size fails inside with ENOSPC instead of filling the host disk or (as a tmpfs would) host memory.
Everything a capsule can write (home, /tmp, /var/tmp) lives on it. Where loop devices cannot be
used (not root, no /dev/loop-control), `disk/` is a plain directory on the host's disk and the
size is not enforced: `problem()` says why, and the agent reports it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from pathlib import Path

IMAGE = "disk.img"
MOUNT = "disk"
MKFS_TIMEOUT = 60.0


def problem() -> str | None:
    """Why disk sizes cannot be enforced here, or None."""
    if os.geteuid() != 0:
        return "the agent is not root, so it cannot mount a disk image per capsule"
    if not os.path.exists("/dev/loop-control"):
        return "no loop devices (/dev/loop-control is missing)"
    for tool in ("mkfs.ext4", "mount", "umount"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian packages e2fsprogs and mount)"
    return None


def _run(argv: list[str]) -> None:
    result = subprocess.run(argv, capture_output=True, timeout=MKFS_TIMEOUT, check=False)  # noqa: S603
    if result.returncode != 0:
        detail = result.stderr.decode(errors="replace").strip()
        raise OSError(f"{argv[0]} failed ({result.returncode}): {detail}")


def mounted(path: Path) -> bool:
    return os.path.ismount(path)


def attach(root: Path, size_mb: int, owner: int, enforce: bool) -> Path:
    """Make (once) and mount the capsule's disk; returns the mount point. Blocking."""
    mount = root / MOUNT
    mount.mkdir(mode=0o755, exist_ok=True)
    if not enforce:
        os.chown(mount, owner, owner)
        return mount
    image = root / IMAGE
    if not image.exists():
        with open(image, "wb") as handle:
            os.fchmod(handle.fileno(), 0o600)
            handle.truncate(size_mb * 1024 * 1024)
        _run(
            [
                "mkfs.ext4",
                "-q",
                "-F",
                "-m",
                "0",
                "-E",
                f"root_owner={owner}:{owner},lazy_itable_init=1,lazy_journal_init=1",
                str(image),
            ]
        )
    if not mounted(mount):
        _run(["mount", "-o", "loop,nosuid,nodev", str(image), str(mount)])
    return mount


def allocated_bytes(root: Path) -> int | None:
    """Host disk the capsule's image takes (its sparse file's allocated blocks), or None without
    an image (sizes not enforced: the capsule writes to a plain directory). Blocking."""
    try:
        return (root / IMAGE).stat().st_blocks * 512
    except OSError:
        return None


def detach(root: Path) -> None:
    """Unmount the capsule's disk if it is mounted (the loop device goes with it). Blocking."""
    mount = root / MOUNT
    if mounted(mount):
        try:
            _run(["umount", str(mount)])
        except OSError:
            # Busy (a process of the capsule not yet gone): detach lazily, it goes once free.
            with contextlib.suppress(OSError):
                _run(["umount", "-l", str(mount)])
