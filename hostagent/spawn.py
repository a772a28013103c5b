"""Fork a process under a new PTY (a terminal) or with pipes (exec), and report exec failures
instead of a session that exits 127.

The child reports a failed chdir or exec through a close-on-exec pipe: EOF on the pipe means
the exec succeeded. Only `os` calls run between fork and exec.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import signal
import struct
import termios
from dataclasses import dataclass, field

from hostagent.blocking import run_blocking
from hostagent.errors import FailedPrecondition

MAX_FD = 1 << 20


@dataclass
class LaunchSpec:
    """What to exec in the child: `file` is looked up in env's PATH when it has no slash."""

    file: str
    argv: list[str]
    env: dict[str, str]
    cwd: str
    uid: int | None = None
    gid: int | None = None
    groups: list[int] = field(default_factory=list)
    # Shown in error messages: the command the caller asked for, not a wrapper like bwrap.
    display: str = ""
    # The child only starts a new session and the command takes the PTY as its controlling
    # terminal itself (in its own pid namespace, see BwrapRuntime); otherwise the child does.
    terminal_inside: bool = False


@dataclass(frozen=True)
class Spawned:
    pid: int
    master_fd: int


@dataclass(frozen=True)
class Piped:
    """A process started with pipes: read ends of its stdout and stderr (non-blocking), and the
    write end of its stdin (non-blocking) when it was started with one, else None (/dev/null)."""

    pid: int
    stdout_fd: int
    stderr_fd: int
    stdin_fd: int | None = None


def close_quietly(*fds: int) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            continue


def set_window_size(fd: int, cols: int, rows: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


async def spawn(spec: LaunchSpec, cols: int, rows: int, cgroup_procs: str | None = None) -> Spawned:
    """Start `spec` as a session leader with a new PTY as its controlling terminal.

    With `cgroup_procs` the child joins that cgroup before exec, so everything it starts is in it.
    """
    master, slave = os.openpty()
    try:
        set_window_size(master, cols, rows)
        err_read, err_write = os.pipe()
    except BaseException:
        os.close(master)
        os.close(slave)
        raise
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child execs or exits
        _exec_child(spec, slave, err_write, cgroup_procs)
    os.close(slave)
    os.close(err_write)
    await _exec_reported(spec, pid, err_read, [master])
    os.set_blocking(master, False)
    return Spawned(pid=pid, master_fd=master)


async def _exec_reported(spec: LaunchSpec, pid: int, report_read: int, parent_ends: list[int]) -> None:
    """Wait for the forked child's exec: EOF on `report_read` means it succeeded. On a report of
    failure, or if the wait is cancelled, the child is reaped (killed first, if cancelled), the
    parent's ends of its terminal or pipes are closed, and the error raised."""
    try:
        report = await _read_to_eof(report_read)
    except BaseException:
        close_quietly(*parent_ends)
        os.kill(pid, signal.SIGKILL)
        # Reaped in a thread: a killed child ends only once it leaves the kernel, and it may be
        # waiting there on a cgroup write.
        await run_blocking(os.waitpid, pid, 0)
        raise
    finally:
        os.close(report_read)
    if report:
        close_quietly(*parent_ends)
        await run_blocking(os.waitpid, pid, 0)  # the child exits right after writing its report
        raise FailedPrecondition(_describe(spec, report))


def stdio_pipes(stdin: bool) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int] | None]:
    """(read, write) pipes for stdout, stderr and, if asked for, stdin (all close-on-exec)."""
    made: list[int] = []
    try:
        out = os.pipe()
        made += out
        err = os.pipe()
        made += err
        inp = os.pipe() if stdin else None
    except BaseException:
        close_quietly(*made)
        raise
    return out, err, inp


def piped(pid: int, out_read: int, err_read: int, stdin_write: int | None) -> Piped:
    """The parent's ends of a started process's pipes, made non-blocking for the event loop."""
    for fd in (out_read, err_read, stdin_write):
        if fd is not None:
            os.set_blocking(fd, False)
    return Piped(pid=pid, stdout_fd=out_read, stderr_fd=err_read, stdin_fd=stdin_write)


async def spawn_piped(spec: LaunchSpec, cgroup_procs: str | None = None, stdin: bool = False) -> Piped:
    """Start `spec` as a session leader with a pipe each for stdout and stderr, and for stdin a
    pipe if `stdin` (the file helper speaks over it) or else /dev/null (exec); with
    `cgroup_procs` the child joins that cgroup before exec."""
    (out_read, out_write), (err_read, err_write), inp = stdio_pipes(stdin)
    in_read, in_write = inp if inp is not None else (None, None)
    parent_ends = [fd for fd in (out_read, err_read, in_write) if fd is not None]
    try:
        report_read, report_write = os.pipe()
    except BaseException:
        close_quietly(*parent_ends, out_write, err_write, *([in_read] if in_read is not None else []))
        raise
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child execs or exits
        _exec_piped_child(spec, in_read, out_write, err_write, report_write, cgroup_procs)
    close_quietly(out_write, err_write, report_write, *([in_read] if in_read is not None else []))
    await _exec_reported(spec, pid, report_read, parent_ends)
    return piped(pid, out_read, err_read, in_write)


def _describe(spec: LaunchSpec, report: bytes) -> str:
    stage, _, code = report.decode(errors="replace").partition(":")
    number = int(code) if code.isdigit() else 0
    reason = os.strerror(number) if number else "unexpected error in the child"
    if stage == "chdir":
        return f"cannot start '{spec.display}': cannot change directory to '{spec.cwd}': {reason}"
    if stage == "cgroup":
        return f"cannot start '{spec.display}': cannot join the sandbox's cgroup: {reason}"
    if stage == "user":
        return f"cannot start '{spec.display}': cannot switch user: {reason}"
    return f"cannot start '{spec.display}': {reason}"


async def _read_to_eof(fd: int) -> bytes:
    loop = asyncio.get_running_loop()
    os.set_blocking(fd, False)
    chunks: list[bytes] = []
    done: asyncio.Future[None] = loop.create_future()

    def on_readable() -> None:
        try:
            chunk = os.read(fd, 512)
        except BlockingIOError:
            return
        except OSError as exc:
            chunk = b""
            chunks.append(f"setup:{exc.errno}".encode())
        if chunk:
            chunks.append(chunk)
        elif not done.done():
            done.set_result(None)

    loop.add_reader(fd, on_readable)
    try:
        await done
    finally:
        loop.remove_reader(fd)
    return b"".join(chunks)


def _exec_piped_child(
    spec: LaunchSpec,
    in_read: int | None,
    out_write: int,
    err_write: int,
    report_write: int,
    cgroup_procs: str | None,
) -> None:  # pragma: no cover
    try:
        os.setsid()
        source = os.open(os.devnull, os.O_RDONLY) if in_read is None else in_read
        os.dup2(source, 0)
        os.dup2(out_write, 1)
        os.dup2(err_write, 2)
        for fd in (source, out_write, err_write):
            if fd > 2:
                os.close(fd)
    except BaseException:
        os._exit(127)
    _exec_child(spec, None, report_write, cgroup_procs)


def _exec_child(
    spec: LaunchSpec, slave: int | None, err_write: int, cgroup_procs: str | None
) -> None:  # pragma: no cover
    """Exec `spec`; with `slave`, under that PTY, else with stdio as the caller left it."""
    stage = "setup"
    try:
        if slave is None:
            pass  # stdio and the session are set (_exec_piped_child)
        elif spec.terminal_inside:
            os.setsid()
            for fd in (0, 1, 2):
                os.dup2(slave, fd)
            if slave > 2:
                os.close(slave)
        else:
            os.login_tty(slave)  # setsid, make the PTY the controlling terminal, dup2 onto 0/1/2
        os.closerange(3, err_write)
        os.closerange(err_write + 1, MAX_FD)
        # Python ignores SIGPIPE and SIGXFSZ; ignored signals survive exec.
        for signum in (signal.SIGPIPE, signal.SIGXFSZ):
            signal.signal(signum, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        if cgroup_procs is not None:
            # Before dropping privileges: the sandbox user may not write the cgroup.
            stage = "cgroup"
            fd = os.open(cgroup_procs, os.O_WRONLY)
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
        if spec.uid is not None and spec.gid is not None:
            stage = "user"
            os.setgroups(spec.groups)
            os.setgid(spec.gid)
            os.setuid(spec.uid)
        stage = "chdir"
        os.chdir(spec.cwd)
        stage = "exec"
        os.execvpe(spec.file, spec.argv, spec.env)  # noqa: S606 - no shell by design
    except OSError as exc:
        os.write(err_write, f"{stage}:{exc.errno or errno.EINVAL}".encode())
    except BaseException:
        os.write(err_write, f"{stage}:0".encode())
    finally:
        os._exit(127)
