"""The OCI runtime from inside a capsule, as hostile code would try it: one machine, and a box.

Every capsule is one container: its terminals share processes, localhost and files; its limits
(memory with swap, processes, CPU, disk) hold; root inside is an unprivileged host uid of the
capsule's own range; the seccomp filter refuses the usual escape calls; nothing of the host's
/etc or of the agent's files is in view; envs appear on no command line.
"""

from __future__ import annotations

import asyncio
import os
import platform
import time
import uuid
from pathlib import Path
from typing import Any

import grpc
import pytest

from hostagent.oci import UID_BASE, UID_RANGE
from hostagent.procs import state_of
from protos import hostagent_pb2 as pb
from protos import hostagent_pb2_grpc as pb_grpc
from tests.hostagent.conftest import CapsuleFactory, capsule_dir
from tests.support.hostagent import HostAgentProcess, start_hostagent, start_terminal
from tests.support.polling import wait_until

pytestmark = pytest.mark.timeout(120)


async def _run(stub: Any, sandbox_id: str, script: str, user: str = "", **fields: Any) -> tuple[int, str]:
    terminal, _ = await start_terminal(stub, sandbox_id, "/bin/bash", "-c", script, user=user, **fields)
    code = await terminal.wait_exit(60)
    return code, terminal.output.decode(errors="replace").replace("\r\n", "\n")


def _cgroup_file(controller: str, agent: HostAgentProcess, sandbox_id: str, name: str) -> Path:
    """A file of the capsule's cgroup, on whichever hierarchy carries `controller`."""
    with open("/proc/self/mounts") as mounts:
        entries = [line.split() for line in mounts]
    for _dev, mount, fstype, options, *_ in entries:
        if fstype == "cgroup" and controller in options.split(","):
            return Path(mount) / agent.cgroup_root / sandbox_id / name
    for _dev, mount, fstype, *_ in entries:
        if fstype == "cgroup2":
            return Path(mount) / agent.cgroup_root / sandbox_id / name
    raise AssertionError(f"no cgroup hierarchy carries {controller}")


def _cpu_seconds(agent: HostAgentProcess, sandbox_id: str) -> float:
    v1 = _cgroup_file("cpuacct", agent, sandbox_id, "cpuacct.usage")
    if v1.exists():
        return int(v1.read_text()) / 1e9
    stat = _cgroup_file("cpu", agent, sandbox_id, "cpu.stat").read_text()
    usage = next(line for line in stat.splitlines() if line.startswith("usage_usec"))
    return int(usage.split()[1]) / 1e6


def _host_shmem_kib() -> int:
    with open("/proc/meminfo") as meminfo:
        return int(next(line for line in meminfo if line.startswith("Shmem:")).split()[1])


def _host_uid(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return int(next(line for line in status if line.startswith("Uid:")).split()[1])


def _command_lines_with(needle: bytes) -> list[tuple[str, bytes]]:
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                cmdline = Path(f"/proc/{name}/cmdline").read_bytes()
            except OSError:
                continue
            if needle in cmdline:
                found.append((name, cmdline))
    return found


# One machine


async def test_terminals_of_one_capsule_share_processes_localhost_and_files(
    oci_stub: Any, oci_capsules: CapsuleFactory
) -> None:
    capsule = await oci_capsules()
    server, _ = await start_terminal(
        oci_stub,
        capsule,
        "/bin/bash",
        "-c",
        "sleep 4321 & echo shared > /tmp/note && exec python3 -m http.server 8123 --bind 127.0.0.1",
    )
    await server.expect(b"Serving HTTP")  # printed once it listens
    probe = (
        "ps -eo args | grep -x 'sleep 4321' && cat /tmp/note && "
        "python3 -c \"import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:8123/').status)\""
    )
    code, output = await _run(oci_stub, capsule, probe)
    assert code == 0, output
    assert output.split() == ["sleep", "4321", "shared", "200"]

    await oci_stub.PauseSandbox(pb.PauseSandboxRequest(sandbox_id=capsule), timeout=30)
    await oci_stub.ResumeSandbox(pb.ResumeSandboxRequest(sandbox_id=capsule), timeout=30)
    code, output = await _run(oci_stub, capsule, probe)
    assert code == 0, output
    assert output.split()[-1] == "200"
    assert server.exit_code is None


async def test_a_capsule_cannot_see_another_capsules_processes_or_files(
    oci_stub: Any, oci_capsules: CapsuleFactory
) -> None:
    first, second = await oci_capsules(), await oci_capsules()
    marker = f"sleep {uuid.uuid4().int % 100000 + 1000}"
    holder, _ = await start_terminal(
        oci_stub, first, "/bin/bash", "-c", f"echo mine > /tmp/mine; echo holding; exec {marker}"
    )
    await holder.expect(b"holding")
    _code, output = await _run(
        oci_stub,
        second,
        f"ps -eo args | grep -cx '{marker}'; ls /tmp | grep -c mine; pkill -xf '{marker}'; echo $?",
    )
    assert output.split() == ["0", "0", "1"]  # not in view, and nothing to signal
    assert holder.exit_code is None


async def test_root_inside_is_an_unprivileged_host_uid_of_the_capsules_own_range(
    oci_stub: Any, oci_capsules: CapsuleFactory
) -> None:
    first, second = await oci_capsules(), await oci_capsules()
    ranges = []
    for capsule in (first, second):
        terminal, started = await start_terminal(oci_stub, capsule, "/bin/sleep", "30", user="root")
        uid = _host_uid(started.pid)
        assert uid >= UID_BASE
        assert (uid - UID_BASE) % UID_RANGE == 0  # root inside is the base of the range
        ranges.append(uid // UID_RANGE)
        await terminal.kill()
    assert ranges[0] != ranges[1]


async def test_processes_have_no_new_privs_and_a_seccomp_filter(
    oci_stub: Any, oci_capsules: CapsuleFactory
) -> None:
    capsule = await oci_capsules()
    code, output = await _run(
        oci_stub, capsule, "grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status", user="root"
    )
    assert code == 0
    assert output.split() == ["NoNewPrivs:", "1", "Seccomp:", "2"]


ESCAPES_X86_64 = {"add_key": 248, "keyctl": 250, "bpf": 321, "init_module": 175, "open_by_handle_at": 304}
ESCAPES_AARCH64 = {"add_key": 217, "keyctl": 219, "bpf": 280, "init_module": 105, "open_by_handle_at": 265}


async def test_root_cannot_make_namespaces_mount_or_reach_keys_bpf_and_modules(
    oci_stub: Any, oci_capsules: CapsuleFactory
) -> None:
    capsule = await oci_capsules()
    calls = ESCAPES_AARCH64 if platform.machine() == "aarch64" else ESCAPES_X86_64
    script = (
        "unshare --user --map-root-user true; echo unshare=$?; "
        "mkdir -p /tmp/m && mount -t tmpfs none /tmp/m; echo mount=$?; "
        'python3 -c "import ctypes, os\n'
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        f"for name, number in {calls!r}.items():\n"
        "    result = libc.syscall(number, 0, 0, 0, 0, 0)\n"
        '    print(name, result, os.strerror(ctypes.get_errno()))"'
    )
    _code, output = await _run(oci_stub, capsule, script, user="root")
    assert "unshare=1" in output
    assert "mount=32" in output or "mount=1" in output
    for name in calls:
        assert f"{name} -1 Operation not permitted" in output, output


async def test_nothing_of_the_hosts_etc_or_the_agents_files_is_in_view(
    oci_stub: Any, oci_agent: HostAgentProcess, oci_capsules: CapsuleFactory
) -> None:
    capsule = await oci_capsules()
    script = (
        "ls /etc/shadow /etc/redis /etc/postgresql /etc/ssh 2>&1 | grep -c 'No such file'; "
        f"ls {oci_agent.data_dir} 2>&1 | grep -c 'No such file'; "
        "cat /proc/1/cmdline | tr '\\0' ' '; echo; "
        "touch /usr/x /etc/x /x 2>&1 | grep -c 'Read-only file system'"
    )
    _code, output = await _run(oci_stub, capsule, script, user="root")
    lines = output.split("\n")
    assert lines[0] == "4"
    assert lines[1] == "1"
    assert lines[2].startswith("/usr/bin/tini")
    assert lines[3] == "3"


async def test_envs_appear_on_no_host_command_line(oci_stub: Any, oci_capsules: CapsuleFactory) -> None:
    capsule = await oci_capsules()
    secret = f"s3cret-{uuid.uuid4().hex}"
    terminal, _ = await start_terminal(
        oci_stub,
        capsule,
        "/bin/bash",
        "-c",
        'echo "got ${TOKEN#s3cret-}"; exec sleep 30',
        envs={"TOKEN": secret},
    )
    await terminal.expect(b"got " + secret.removeprefix("s3cret-").encode())
    assert _command_lines_with(secret.encode()) == []
    await terminal.kill()


async def test_a_killed_init_is_started_again_before_the_next_terminal(
    oci_stub: Any, oci_agent: HostAgentProcess, oci_capsules: CapsuleFactory
) -> None:
    capsule = await oci_capsules()
    init = int((capsule_dir(oci_agent, capsule) / "init.pid").read_text())
    # Root inside can end the capsule's init (by killing what it waits for): everything inside
    # ends, and the next terminal gets a fresh environment on the same disk, not an error.
    await _run(oci_stub, capsule, "echo kept > /home/user/file; kill -9 $(pgrep -x sleep)", user="root")
    await wait_until(lambda: state_of(init) in (None, "Z"))
    code, output = await _run(
        oci_stub, capsule, "cat ~/file; ps -eo args | grep -c '^/usr/bin/sleep infinity'"
    )
    assert code == 0, output
    assert output.split() == ["kept", "1"]


# Limits


async def test_the_memory_limit_kills_inside_with_137_and_counts_the_kill(
    oci_stub: Any, oci_capsules: CapsuleFactory
) -> None:
    small, neighbour = await oci_capsules(memory_mb=128), await oci_capsules()
    hog, _ = await start_terminal(
        oci_stub, small, "/usr/bin/python3", "-c", "x = bytearray(300 * 1024 * 1024); print('survived')"
    )
    assert await hog.wait_exit(60) == 137
    assert b"survived" not in hog.output
    listing = await oci_stub.ListSandboxes(pb.ListSandboxesRequest(), timeout=30)
    counts = {s.sandbox_id: s.oom_kills for s in listing.sandboxes}
    assert counts[small] >= 1
    assert counts[neighbour] == 0
    code, output = await _run(oci_stub, neighbour, "echo fine")
    assert (code, output.strip()) == (0, "fine")
    code, output = await _run(oci_stub, small, "echo still-usable")
    assert (code, output.strip()) == (0, "still-usable")


@pytest.mark.agent
async def test_a_process_storm_stops_at_the_pids_limit_and_the_agent_keeps_answering(tmp_path: Path) -> None:
    # An agent of its own with a small limit: the storm stays small in memory too.
    agent = start_hostagent(tmp_path / "agent", runtime="oci", args=["--pids-limit", "100"])
    try:
        async with grpc.aio.insecure_channel(agent.address) as channel:
            stub = pb_grpc.HostAgentStub(channel)
            for sandbox_id in ("cl-storm", "cl-neighbour"):
                await stub.CreateSandbox(pb.CreateSandboxRequest(sandbox_id=sandbox_id), timeout=30)
            assert int(_cgroup_file("pids", agent, "cl-storm", "pids.max").read_text()) == 100
            # Bounded by the test: 300 forks at most, for 60 s at most; never an unbounded fork
            # bomb. Each sleep leads a session of its own, so it outlives the terminal's end.
            storm = "for i in $(seq 300); do [ $SECONDS -lt 60 ] || break; setsid -f sleep 30; done"
            terminal, _ = await start_terminal(stub, "cl-storm", "/bin/bash", "-c", storm)
            await terminal.wait_exit(90)
            assert 90 <= int(_cgroup_file("pids", agent, "cl-storm", "pids.current").read_text()) <= 100
            events = _cgroup_file("pids", agent, "cl-storm", "pids.events")
            if events.exists():  # "max N": forks refused at the limit
                assert int(events.read_text().split()[-1]) > 0
            listing = await stub.ListSandboxes(pb.ListSandboxesRequest(), timeout=10)
            assert sorted(s.sandbox_id for s in listing.sandboxes) == ["cl-neighbour", "cl-storm"]
            code, output = await _run(stub, "cl-neighbour", "echo unaffected")
            assert (code, output.strip()) == (0, "unaffected")
            await stub.DestroySandbox(pb.DestroySandboxRequest(sandbox_id="cl-storm"), timeout=30)
            assert not _cgroup_file("pids", agent, "cl-storm", "pids.current").exists()
    finally:
        agent.stop()


async def test_one_vcpu_caps_four_busy_loops_at_about_one_core(
    oci_stub: Any, oci_agent: HostAgentProcess, oci_capsules: CapsuleFactory
) -> None:
    capsule = await oci_capsules(vcpus=1)
    loops, _ = await start_terminal(
        oci_stub,
        capsule,
        "/bin/bash",
        "-c",
        "for i in 1 2 3 4; do (while :; do :; done) & done; echo spinning; wait",
    )
    await loops.expect(b"spinning")
    await asyncio.sleep(0.5)
    before, started = _cpu_seconds(oci_agent, capsule), time.monotonic()
    await asyncio.sleep(3)
    used = (_cpu_seconds(oci_agent, capsule) - before) / (time.monotonic() - started)
    await loops.kill()
    # A quota of one core: at most about one, whatever the machine's speed or core count.
    assert used <= 1.2, f"{used:.2f} cores"


async def test_writing_past_the_disk_size_fails_inside_with_enospc(
    oci_stub: Any, oci_agent: HostAgentProcess, oci_capsules: CapsuleFactory
) -> None:
    capsule = await oci_capsules(disk_size_mb=64)
    script = (
        "dd if=/dev/zero of=/tmp/fill bs=1M count=100 2>&1 | grep -c 'No space left'; "
        "dd if=/dev/zero of=$HOME/fill bs=1M count=10 2>&1 | grep -c 'No space left'; "
        "dd if=/dev/zero of=/dev/fill bs=1M count=10 2>&1 | grep -cE 'No space left|Permission denied'"
    )
    shared_before = _host_shmem_kib()
    _code, output = await _run(oci_stub, capsule, script)
    assert output.split() == ["1", "1", "1"], output
    # The space is the capsule's disk image on the host's disk, not host memory (a tmpfs):
    # 64 MiB written, and the host's shared memory (what tmpfs holds) has not grown with it.
    assert _host_shmem_kib() - shared_before < 16 * 1024
    image = capsule_dir(oci_agent, capsule) / "disk.img"
    assert image.stat().st_size == 64 * 1024 * 1024
    assert image.stat().st_blocks * 512 > 50 * 1024 * 1024


async def test_bad_limits_are_refused_with_the_range(oci_stub: Any) -> None:
    for request, message in (
        (pb.CreateSandboxRequest(memory_mb=8), "memory_mb must be between 16 and"),
        (pb.CreateSandboxRequest(disk_size_mb=1), "disk_size_mb must be between 16 and"),
        (pb.CreateSandboxRequest(vcpus=100000), "vcpus must be at most 64 on this host"),
    ):
        request.sandbox_id = "cl-bad-limits"
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await oci_stub.CreateSandbox(request, timeout=30)
        assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert message in (failure.value.details() or "")
    listing = await oci_stub.ListSandboxes(pb.ListSandboxesRequest(), timeout=30)
    assert "cl-bad-limits" not in [s.sandbox_id for s in listing.sandboxes]
