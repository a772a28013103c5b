"""File calls from the attacker's side: no path, `..`, symlink or /proc trick reaches the host's
files or another capsule's, and a full capsule disk fails cleanly without growing the host.

The runtimes that isolate (bwrap, OCI); the process runtime isolates nothing, by design.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

import grpc
import pytest

from protos import hostagent_pb2 as pb
from protos import hostagent_pb2_grpc as pb_grpc
from tests.hostagent.conftest import AgentFactory, CapsuleFactory, capsule_dir, new_sandbox_id
from tests.hostagent.test_files import fails, read, run_in, write
from tests.support.hostagent import HostAgentProcess

pytestmark = pytest.mark.timeout(120)

SECRET = b"host secret: never inside a capsule"
REFUSED = (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.FAILED_PRECONDITION)


@pytest.fixture(params=["bwrap", "oci"])
def isolating_agent(request: pytest.FixtureRequest, agent_for_runtime: AgentFactory) -> HostAgentProcess:
    return agent_for_runtime(str(request.param))


@pytest.fixture
async def target(
    isolating_agent: HostAgentProcess,
) -> AsyncIterator[tuple[Any, HostAgentProcess, CapsuleFactory]]:
    """(stub, agent, `await make(**fields)`: a new capsule) for the runtime under test."""
    made: list[str] = []
    async with grpc.aio.insecure_channel(isolating_agent.address) as channel:
        stub = pb_grpc.HostAgentStub(channel)

        async def make(**fields: Any) -> str:
            sandbox_id = new_sandbox_id()
            await stub.CreateSandbox(pb.CreateSandboxRequest(sandbox_id=sandbox_id, **fields), timeout=30)
            made.append(sandbox_id)
            return sandbox_id

        yield stub, isolating_agent, make
        for sandbox_id in made:
            with contextlib.suppress(grpc.aio.AioRpcError):
                await stub.DestroySandbox(pb.DestroySandboxRequest(sandbox_id=sandbox_id), timeout=30)


@pytest.fixture
def host_secret(tmp_path: Path) -> Path:
    """A file only the host has, readable by anyone on the host."""
    tmp_path.chmod(0o755)
    path = tmp_path / "secret.txt"
    path.write_bytes(SECRET)
    path.chmod(0o644)
    return path


async def refused(call: Awaitable[Any]) -> Any:
    """The call's result, or None if it failed with one of the statuses of a refusal."""
    try:
        return await call
    except grpc.aio.AioRpcError as error:
        code = error.code()
    assert code in REFUSED, code
    return None


def host_bytes(path: Path) -> bytes:
    return path.read_bytes()


def host_has(path: Path) -> bool:
    return path.exists()


async def refused_or_not_the_host(stub: Any, sandbox_id: str, path: str) -> None:
    """Reading `path` either fails or gives something that is not the host's secret."""
    result = await refused(read(stub, sandbox_id, path))
    assert result is None or SECRET not in result[1]


async def test_dotdot_stays_inside(target: Any, host_secret: Path) -> None:
    stub, _agent, make = target
    capsule = await make()
    depth = "../" * 20
    await refused_or_not_the_host(stub, capsule, f"{depth}etc/shadow")
    await refused_or_not_the_host(stub, capsule, f"{depth}{host_secret}")
    await refused_or_not_the_host(stub, capsule, f"/root/{depth}{str(host_secret).lstrip('/')}")


async def test_absolute_host_paths_name_capsule_files(target: Any, host_secret: Path) -> None:
    stub, agent, make = target
    capsule = await make()
    await refused_or_not_the_host(stub, capsule, str(host_secret))
    await refused_or_not_the_host(stub, capsule, str(agent.data_dir / "sandboxes" / capsule / "config.json"))
    await fails(read(stub, capsule, str(host_secret)), grpc.StatusCode.NOT_FOUND)


async def test_proc_roots_are_the_capsules_own(target: Any, host_secret: Path) -> None:
    stub, agent, make = target
    capsule = await make()
    for pid in (1, agent.proc.pid, os.getpid()):
        await refused_or_not_the_host(stub, capsule, f"/proc/{pid}/root{host_secret}")
    # /proc/1/root is the capsule's own root: what it holds is what the capsule sees.
    _entry, through_proc = await read(stub, capsule, "/proc/1/root/etc/passwd")
    _entry, direct = await read(stub, capsule, "/etc/passwd")
    assert through_proc == direct


async def test_symlinks_inside_resolve_inside(target: Any, host_secret: Path) -> None:
    stub, _agent, make = target
    capsule = await make()
    await run_in(
        stub, capsule, f"ln -s / top && ln -s {host_secret} secret && ln -s {host_secret.parent} hostdir"
    )
    await refused_or_not_the_host(stub, capsule, f"/root/top{host_secret}")
    await refused_or_not_the_host(stub, capsule, "/root/secret")
    await refused_or_not_the_host(stub, capsule, "/root/hostdir/secret.txt")
    # Writing through them lands inside the capsule (or nowhere), never on the host.
    for path in ("/root/secret", "/root/hostdir/secret.txt", f"/root/top{host_secret}"):
        await refused(write(stub, capsule, path, b"overwritten"))
    assert host_bytes(host_secret) == SECRET


async def test_writes_to_host_paths_never_reach_the_host(target: Any, tmp_path: Path) -> None:
    stub, agent, make = target
    capsule = await make()
    planted = [tmp_path / "planted", agent.data_dir / "planted", Path("/etc/wrenn-planted")]
    for path in planted:
        await refused(write(stub, capsule, str(path), b"planted"))
    for directory in ("/usr/bin/wrenn-planted", "/etc/planted-dir"):
        await refused(stub.MakeDir(pb.FilePathRequest(sandbox_id=capsule, path=directory), timeout=30))
    for path in (*planted, Path("/usr/bin/wrenn-planted"), Path("/etc/planted-dir")):
        assert not host_has(path), path


async def test_removing_host_paths_leaves_them(target: Any, host_secret: Path) -> None:
    stub, agent, make = target
    capsule = await make()
    for path in (str(host_secret), str(host_secret.parent), str(agent.data_dir), "/usr/bin/env"):
        await refused(stub.RemovePath(pb.FilePathRequest(sandbox_id=capsule, path=path), timeout=30))
    assert host_bytes(host_secret) == SECRET
    assert host_has(agent.data_dir)
    assert host_has(Path("/usr/bin/env"))


async def test_a_capsule_cannot_reach_another_capsules_files(target: Any) -> None:
    stub, agent, make = target
    mine, theirs = await make(), await make()
    await write(stub, theirs, "/root/private.txt", b"theirs")
    await write(stub, theirs, "/tmp/private.txt", b"theirs")
    other_root = capsule_dir(agent, theirs)
    for path in (
        "/root/private.txt",
        "/tmp/private.txt",
        f"{other_root}/root/private.txt",
        f"{other_root}/disk/root/private.txt",
        f"{other_root}/disk/tmp/private.txt",
    ):
        result = await refused(read(stub, mine, path))
        assert result is None or result[1] != b"theirs", path
    assert (await read(stub, theirs, "/root/private.txt"))[1] == b"theirs"


async def test_a_full_disk_fails_the_write_clearly_and_the_host_does_not_grow(
    oci_stub: Any, oci_agent: HostAgentProcess, oci_capsules: CapsuleFactory
) -> None:
    capsule = await oci_capsules(disk_size_mb=16)
    root = capsule_dir(oci_agent, capsule)
    image = root / "disk.img"
    before = image.stat().st_size
    details = await fails(
        write(oci_stub, capsule, "/root/big.bin", b"\0" * (32 << 20)), grpc.StatusCode.RESOURCE_EXHAUSTED
    )
    assert "no space left" in details
    # The image keeps its size (the disk is full, not the host), and nothing was written beside it.
    assert image.stat().st_size == before
    assert image.stat().st_blocks * 512 <= before + (1 << 20)
    # No half-written file stays behind to fill the disk: the capsule takes writes again.
    await fails(read(oci_stub, capsule, "/root/big.bin"), grpc.StatusCode.NOT_FOUND)
    await write(oci_stub, capsule, "/root/small.txt", b"fine" * 1024 * 1024)
