"""Choosing the sandbox runtime: the strongest of oci, bwrap and process that works on this host.

Each step down is logged as a warning naming what capsules lose, and recorded on the runtime
(`fallback_reason`) for its isolation report.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from hostagent.bwrap import BwrapRuntime
from hostagent.oci import OciRuntime, find_tools
from hostagent.runtime import Defaults, ProcessRuntime, Runtime

log = logging.getLogger(__name__)

RUNTIMES = ("auto", "oci", "bwrap", "process")


class RuntimeUnavailable(Exception):
    """The runtime asked for cannot work on this host."""


PROCESS_WARNING = (
    "runtime=process ISOLATES NOTHING: capsule processes run as ordinary host processes of "
    "this agent's user and can read and change everything that user can. Use it for "
    "development only; install bubblewrap (Debian package 'bubblewrap') for isolation."
)


OCI_WARNING = (
    "THE OCI RUNTIME IS UNAVAILABLE (%s): capsules get NO network of their own (they reach "
    "the host's loopback, its Redis, PostgreSQL and this agent), NO memory, CPU, process or "
    "disk limits and NO seccomp filter. Install runc and tini (Debian packages) and run the "
    "agent as root for isolation."
)


def choose_runtime(
    name: str,
    data_dir: Path,
    sandbox_uid: int,
    defaults: Defaults | None = None,
    cgroup_root: str = "wrenn-hostagent",
    uid_base: int = 1 << 20,
) -> Runtime:
    """Pick the runtime for `--runtime name` (auto: the first of oci, bwrap, process that works)."""
    if name not in RUNTIMES:
        raise RuntimeUnavailable(f"unknown runtime {name!r} (expected {', '.join(RUNTIMES)})")
    fallback = f"runtime={name} was asked for"
    if name in ("auto", "oci"):
        tools = find_tools()
        if isinstance(tools, str):
            problem: str | None = tools
        else:
            oci = OciRuntime(*tools, data_dir / "oci", defaults or Defaults(), cgroup_root, uid_base)
            problem = oci.probe(data_dir / "sandboxes")
            if problem is None:
                oci.start()
                return oci
        if name == "oci":
            raise RuntimeUnavailable(f"the OCI runtime cannot work here: {problem}")
        log.warning(OCI_WARNING, problem)
        fallback = f"the OCI runtime is unavailable: {problem}"
    if name in ("auto", "bwrap"):
        binary = shutil.which("bwrap")
        if binary is None:
            problem = "bwrap is not on PATH"
        else:
            runtime = BwrapRuntime(binary, sandbox_uid=sandbox_uid)
            problem = runtime.probe(data_dir / "sandboxes")
            if problem is None:
                runtime.fallback_reason = fallback
                return runtime
        if name == "bwrap":
            raise RuntimeUnavailable(f"the bwrap runtime cannot work here: {problem}")
        log.warning("bubblewrap unavailable (%s); falling back to plain processes", problem)
        fallback += f"; bubblewrap is unavailable: {problem}"
    log.warning("%s", PROCESS_WARNING)
    process = ProcessRuntime()
    process.fallback_reason = fallback
    return process
