"""The file helper: one file operation, done by a process INSIDE a capsule, spoken over its stdio.

The agent never opens a capsule's files itself: a path, a `..` or a symlink resolved on the host
could name the host's files. It starts this module's source with the capsule's own
`/usr/bin/python3 -I -S -c <source>` through the runtime's piped spawn (hostagent/files.py), as
the capsule's user, so the kernel resolves every path in the capsule's own mounts, as any of its
processes would, with that user's rights. This file is standard library only and imports nothing
of the agent: it runs where the agent's code is not.

Frames, both ways: one kind byte, a 4-byte big-endian length, the payload. `J` carries a JSON
object, `D` file bytes (at most CHUNK), `E` the end of the bytes. The agent sends one request
(`J`), and for a write the bytes (`D`..., `E`); the helper answers `J` (`{"error": {...}}` or
the result), and for a read, after a `J` header, `D`... then `E` (or a `J` error mid-way).

The capsule's own code can trace and rewrite this process (it is the capsule's user): the agent
treats every answer as hostile input (hostagent/files.py bounds and checks it).
"""

from __future__ import annotations

import contextlib
import errno
import grp
import json
import os
import pwd
import shutil
import stat
import struct
import sys
from typing import Any

CHUNK = 64 * 1024
HEADER = struct.Struct(">cI")
MAX_REQUEST = 1 << 20
# A listing beyond this many entries is refused rather than sent: it would be megabytes of JSON.
MAX_ENTRIES = 10_000
MAX_DEPTH = 32

# errno -> the gRPC status name the agent reports.
KINDS = {
    errno.ENOENT: "NOT_FOUND",
    errno.EEXIST: "ALREADY_EXISTS",
    errno.ENOTEMPTY: "ALREADY_EXISTS",
    errno.EISDIR: "FAILED_PRECONDITION",
    errno.ENOTDIR: "FAILED_PRECONDITION",
    errno.ELOOP: "FAILED_PRECONDITION",
    errno.ENXIO: "FAILED_PRECONDITION",
    errno.EBUSY: "FAILED_PRECONDITION",
    errno.EROFS: "PERMISSION_DENIED",
    errno.EACCES: "PERMISSION_DENIED",
    errno.EPERM: "PERMISSION_DENIED",
    errno.ENOSPC: "RESOURCE_EXHAUSTED",
    errno.EDQUOT: "RESOURCE_EXHAUSTED",
    errno.EFBIG: "RESOURCE_EXHAUSTED",
    errno.ENAMETOOLONG: "INVALID_ARGUMENT",
    errno.EINVAL: "INVALID_ARGUMENT",
}


class Failed(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


def fail_os(exc: OSError, path: str) -> Failed:
    kind = KINDS.get(exc.errno or 0, "INTERNAL")
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        reason = "no space left on the capsule's disk"
    return Failed(kind, f"{path}: {reason}")


def read_exact(size: int) -> bytes:
    parts = []
    while size:
        part = os.read(0, min(size, 1 << 20))
        if not part:
            raise EOFError
        parts.append(part)
        size -= len(part)
    return b"".join(parts)


def read_frame() -> tuple[bytes, bytes]:
    kind, size = HEADER.unpack(read_exact(HEADER.size))
    if size > MAX_REQUEST:
        raise EOFError
    return kind, read_exact(size)


def write_all(data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(1, view) :]


def send(kind: bytes, payload: bytes) -> None:
    write_all(HEADER.pack(kind, len(payload)) + payload)


def send_json(value: dict[str, Any]) -> None:
    send(b"J", json.dumps(value, separators=(",", ":")).encode())


# Paths. `mounts` maps capsule paths to real ones only where the capsule is a plain host
# directory (the agent's "process" runtime, which isolates nothing); in a real capsule it is
# empty and the path is the kernel's to resolve.


def real(path: str, mounts: dict[str, str]) -> str:
    for prefix in sorted(mounts, key=len, reverse=True):
        if path == prefix or path.startswith(prefix.rstrip("/") + "/"):
            return mounts[prefix] + path[len(prefix) :]
    return path


def join(parent: str, name: str) -> str:
    return parent.rstrip("/") + "/" + name if parent != "/" else "/" + name


def name_of(path: str) -> str:
    return os.path.basename(path.rstrip("/")) or "/"


def kind_of(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISLNK(mode):
        return "symlink"
    return "file"


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except (KeyError, OSError):
        return str(uid)


def group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except (KeyError, OSError):
        return str(gid)


def entry(path: str, mounts: dict[str, str], info: os.stat_result | None = None) -> dict[str, Any]:
    host = real(path, mounts)
    if info is None:
        info = os.lstat(host)
    value = {
        "name": name_of(path),
        "path": path,
        "type": kind_of(info.st_mode),
        "size": info.st_size,
        "mode": stat.S_IMODE(info.st_mode),
        "permissions": stat.filemode(info.st_mode),
        "owner": user_name(info.st_uid),
        "group": group_name(info.st_gid),
        "modified_at": int(info.st_mtime),
        "symlink_target": "",
    }
    if stat.S_ISLNK(info.st_mode):
        try:
            value["symlink_target"] = os.readlink(host)
        except OSError:
            value["symlink_target"] = ""
    return value


# Operations


def do_stat(request: dict[str, Any], mounts: dict[str, str]) -> None:
    path = request["path"]
    try:
        send_json({"entry": entry(path, mounts)})
    except OSError as exc:
        raise fail_os(exc, path) from None


def do_list(request: dict[str, Any], mounts: dict[str, str]) -> None:
    path, depth = request["path"], max(1, min(int(request.get("depth") or 1), MAX_DEPTH))
    entries: list[dict[str, Any]] = []
    try:
        info = os.stat(real(path, mounts))
    except OSError as exc:
        raise fail_os(exc, path) from None
    if not stat.S_ISDIR(info.st_mode):
        raise Failed("FAILED_PRECONDITION", f"{path}: Not a directory")

    def walk(directory: str, level: int) -> None:
        try:
            with os.scandir(real(directory, mounts)) as listing:
                children = sorted(listing, key=lambda e: e.name)
                for child in children:
                    child_path = join(directory, child.name)
                    try:
                        child_info = child.stat(follow_symlinks=False)
                    except OSError:
                        continue  # gone since the listing
                    entries.append(entry(child_path, mounts, child_info))
                    if len(entries) > MAX_ENTRIES:
                        raise Failed(
                            "RESOURCE_EXHAUSTED",
                            f"{path}: more than {MAX_ENTRIES} entries; list a deeper path or a smaller depth",
                        )
                    # Symlinked directories are not entered: a link to / would list the capsule.
                    if level < depth and stat.S_ISDIR(child_info.st_mode):
                        walk(child_path, level + 1)
        except OSError as exc:
            if directory == path:
                raise fail_os(exc, path) from None
            # A subdirectory this user may not read is listed, not entered.

    walk(path, 1)
    send_json({"entries": entries})


def do_mkdir(request: dict[str, Any], mounts: dict[str, str]) -> None:
    path = request["path"]
    host = real(path, mounts)
    try:
        if os.path.lexists(host):
            kind = "directory" if os.path.isdir(host) else "file"
            raise Failed("ALREADY_EXISTS", f"{path}: already exists (a {kind})")
        os.makedirs(host, exist_ok=True)
        send_json({"entry": entry(path, mounts)})
    except OSError as exc:
        raise fail_os(exc, path) from None


def do_remove(request: dict[str, Any], mounts: dict[str, str]) -> None:
    path = request["path"]
    host = real(path, mounts)
    try:
        info = os.lstat(host)
        if stat.S_ISDIR(info.st_mode):
            # rmtree never follows a symlink out of the tree (it works by directory fds).
            shutil.rmtree(host)
        else:
            os.unlink(host)
    except OSError as exc:
        raise fail_os(exc, path) from None
    send_json({})


def open_regular(host: str, path: str, flags: int, mode: int = 0o644) -> int:
    """Open without blocking on a FIFO or a device, and refuse anything but a regular file."""
    try:
        fd = os.open(host, flags | os.O_NONBLOCK | os.O_CLOEXEC, mode)
    except OSError as exc:
        raise fail_os(exc, path) from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        what = "a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file"
        raise Failed("FAILED_PRECONDITION", f"{path}: is {what}")
    os.set_blocking(fd, True)
    return fd


def do_read(request: dict[str, Any], mounts: dict[str, str]) -> None:
    path = request["path"]
    if os.path.isdir(real(path, mounts)):
        raise Failed("FAILED_PRECONDITION", f"{path}: Is a directory")
    fd = open_regular(real(path, mounts), path, os.O_RDONLY)
    try:
        send_json({"entry": entry(path, mounts, os.fstat(fd))})
        while True:
            try:
                data = os.read(fd, CHUNK)
            except OSError as exc:
                raise fail_os(exc, path) from None
            if not data:
                break
            send(b"D", data)
    finally:
        os.close(fd)
    send(b"E", b"")


def do_write(request: dict[str, Any], mounts: dict[str, str]) -> None:
    """Into a temporary file beside the target, renamed over it at the end: a reader never sees
    half a file, and a write that fails or is abandoned (a full disk, a cancelled upload, a size
    limit) leaves the old file as it was and frees its space."""
    path = request["path"]
    mode = int(request.get("mode") or 0o644) & 0o7777
    host = real(path, mounts)
    parent = os.path.dirname(host) or "/"
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as exc:
        if exc.errno == errno.EEXIST:  # the parent exists, and is not a directory
            raise Failed("FAILED_PRECONDITION", f"{os.path.dirname(path)}: Not a directory") from None
        raise fail_os(exc, os.path.dirname(path)) from None
    if os.path.isdir(host):
        raise Failed("FAILED_PRECONDITION", f"{path}: Is a directory")
    temporary = os.path.join(parent, f".{os.path.basename(host)[:200]}.wrenn-{os.urandom(6).hex()}")
    fd = open_regular(temporary, path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    done = False
    try:
        os.fchmod(fd, mode)  # not narrowed by the umask: the caller asked for these bits
        send_json({"ready": True})
        while True:
            kind, data = read_frame()
            if kind == b"E":
                break
            if kind != b"D":
                raise Failed("INVALID_ARGUMENT", "unexpected frame in a write")
            view = memoryview(data)
            try:
                while view:
                    view = view[os.write(fd, view) :]
            except OSError as exc:
                raise fail_os(exc, path) from None
        info = os.fstat(fd)
        try:
            os.rename(temporary, host)
        except OSError as exc:
            raise fail_os(exc, path) from None
        done = True
    finally:
        os.close(fd)
        if not done:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
    send_json({"entry": entry(path, mounts, info)})


OPERATIONS = {
    "stat": do_stat,
    "list": do_list,
    "mkdir": do_mkdir,
    "remove": do_remove,
    "read": do_read,
    "write": do_write,
}


def main() -> int:
    os.umask(0o022)
    try:
        kind, payload = read_frame()
        request = json.loads(payload)
    except (EOFError, ValueError):
        return 2
    if kind != b"J" or not isinstance(request, dict) or request.get("op") not in OPERATIONS:
        send_json({"error": {"kind": "INVALID_ARGUMENT", "message": "unknown file operation"}})
        return 2
    mounts = request.get("mounts") or {}
    try:
        OPERATIONS[request["op"]](request, mounts)
    except Failed as failure:
        send_json({"error": {"kind": failure.kind, "message": failure.message}})
        return 1
    except EOFError:
        return 1  # the agent went away mid-write: nothing to answer
    return 0


if __name__ == "__main__":
    sys.exit(main())
