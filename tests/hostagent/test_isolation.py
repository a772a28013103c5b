"""What a bubblewrap capsule can see and change: only itself."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.hostagent.conftest import capsule_dir
from tests.support.hostagent import HostAgentProcess, start_terminal

pytestmark = pytest.mark.timeout(60)


async def _run(stub: Any, sandbox_id: str, script: str, user: str = "") -> tuple[int, str]:
    terminal, _ = await start_terminal(stub, sandbox_id, "/bin/bash", "-c", script, user=user)
    code = await terminal.wait_exit()
    return code, terminal.output.decode(errors="replace")


async def test_hostname_is_the_sandbox_id(bwrap_stub: Any, bwrap_capsule: str) -> None:
    _, output = await _run(bwrap_stub, bwrap_capsule, "hostname; echo $HOSTNAME")
    assert output.split() == [bwrap_capsule, bwrap_capsule]


async def test_default_user_is_user_1000_at_home(bwrap_stub: Any, bwrap_capsule: str) -> None:
    _, output = await _run(bwrap_stub, bwrap_capsule, 'id -un; id -u; pwd; echo "$HOME"')
    assert output.split() == ["user", "1000", "/home/user", "/home/user"]


async def test_root_user_is_uid_0_inside(bwrap_stub: Any, bwrap_capsule: str) -> None:
    _, output = await _run(bwrap_stub, bwrap_capsule, "id -un; id -u", user="root")
    assert output.split() == ["root", "0"]


async def test_files_written_at_home_land_in_the_capsule_directory(
    bwrap_stub: Any, bwrap_agent: HostAgentProcess, bwrap_capsule: str
) -> None:
    await _run(bwrap_stub, bwrap_capsule, "echo saved > /home/user/note; echo scratch > /tmp/t")
    root = capsule_dir(bwrap_agent, bwrap_capsule)
    assert (root / "home" / "note").read_text() == "saved\n"
    assert (root / "tmp" / "t").read_text() == "scratch\n"


@pytest.mark.parametrize("user", ["user", "root"])
async def test_usr_and_etc_are_read_only(bwrap_stub: Any, bwrap_capsule: str, user: str) -> None:
    name = f"wrenn-isolation-{uuid.uuid4().hex[:8]}"
    script = (
        # Root inside owns its mount namespace and may remount; the host must still refuse.
        "mount -o remount,bind,rw /usr 2>/dev/null; mount -o remount,bind,rw /etc 2>/dev/null; "
        f"touch /usr/{name} /usr/bin/{name} /etc/{name} 2>/dev/null; echo rc=$?; "
        "echo x >> /etc/passwd 2>/dev/null; echo passwd-rc=$?"
    )
    try:
        _, output = await _run(bwrap_stub, bwrap_capsule, script, user=user)
        assert "rc=1" in output
        assert "passwd-rc=1" in output
        for path in (Path("/usr") / name, Path("/usr/bin") / name, Path("/etc") / name):
            assert not path.exists()
    finally:
        for path in (Path("/usr") / name, Path("/usr/bin") / name, Path("/etc") / name):
            path.unlink(missing_ok=True)


async def test_a_capsule_cannot_see_another_capsules_files(
    bwrap_stub: Any, bwrap_agent: HostAgentProcess, bwrap_capsule: str, other_bwrap_capsule: str
) -> None:
    marker = f"secret-{uuid.uuid4().hex}"
    await _run(bwrap_stub, other_bwrap_capsule, f"echo s > /home/user/{marker}; echo s > /tmp/{marker}")
    assert (capsule_dir(bwrap_agent, other_bwrap_capsule) / "home" / marker).exists()
    script = (
        f"find / -name '{marker}*' 2>/dev/null; "
        f"ls -a /proc/*/root/home/user /proc/*/root/tmp /proc/*/cwd 2>/dev/null | grep -c {marker}; "
        f"grep -r {marker} /proc/*/mountinfo 2>/dev/null; "
        f"grep -c {other_bwrap_capsule} /proc/self/mountinfo; "
        "echo end"
    )
    _, output = await _run(bwrap_stub, bwrap_capsule, script)
    assert marker not in output.replace(f"'{marker}*'", "")
    assert output.split() == ["0", "0", "end"]


async def test_a_capsule_cannot_see_another_capsules_processes(
    bwrap_stub: Any, bwrap_capsule: str, other_bwrap_capsule: str
) -> None:
    sleeper, _ = await start_terminal(
        bwrap_stub, other_bwrap_capsule, "/bin/sh", "-c", "echo up; exec sleep 1234"
    )
    await sleeper.expect(b"up")
    _, output = await _run(
        bwrap_stub, bwrap_capsule, "ps ax -o args; cat /proc/[0-9]*/cmdline | tr '\\0' ' '"
    )
    assert "sleep 1234" not in output
    assert "ps ax" in output  # the capsule does see its own processes
    await sleeper.kill()


async def test_a_capsule_sees_only_its_own_few_processes(bwrap_stub: Any, bwrap_capsule: str) -> None:
    _, output = await _run(bwrap_stub, bwrap_capsule, "ls -d /proc/[0-9]* | wc -l")
    # bwrap's init, bash and ls (and the pipeline's wc): nothing of the host.
    assert int(output.split()[-1]) <= 5
