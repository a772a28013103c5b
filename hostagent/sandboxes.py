"""Capsule directories under `<data-dir>/sandboxes/<sandbox_id>/` (with `home/` and `tmp/`).

The directory is the record: the agent rescans it at start, so sandboxes survive a restart,
and so does their paused state (a `paused` file beside `home/`, out of a bwrap capsule's view).
Once the agent serves, the directories are changed in threads: the disk is shared with capsules.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import uuid
from collections.abc import Callable
from pathlib import Path

from hostagent.blocking import run_blocking
from hostagent.errors import NotFound, validate_sandbox_id
from hostagent.runtime import Runtime
from protos import rules

log = logging.getLogger(__name__)

TRASH_PREFIX = ".deleting-"
PAUSED_MARKER = "paused"


def _remove_tree(path: Path) -> None:
    def make_writable_and_retry(function: Callable[[str], object], failed_path: str, _exc: object) -> None:
        # A capsule may have made a directory read-only; its files are still ours to delete.
        parent = os.path.dirname(failed_path)
        os.chmod(parent, os.stat(parent).st_mode | stat.S_IWUSR | stat.S_IXUSR)
        function(failed_path)

    shutil.rmtree(path, onerror=make_writable_and_retry)


class SandboxStore:
    def __init__(self, data_dir: Path, runtime: Runtime) -> None:
        self.root = data_dir / "sandboxes"
        self.runtime = runtime
        self.root.mkdir(parents=True, exist_ok=True)
        # The sandbox user (bwrap as an unprivileged uid) must be able to reach its directories.
        self.root.chmod(0o711)
        self._ids: set[str] = set()
        self._paused: set[str] = set()
        self._rescan()

    def _rescan(self) -> None:
        for entry in self.root.iterdir():
            if entry.name.startswith(TRASH_PREFIX):
                _remove_tree(entry)
            elif entry.is_dir() and rules.is_sandbox_id(entry.name):
                self.runtime.prepare_sandbox(entry)
                self._ids.add(entry.name)
                if (entry / PAUSED_MARKER).exists():
                    self._paused.add(entry.name)
        if self._ids:
            log.info("found %d sandboxes in %s (%d paused)", len(self._ids), self.root, len(self._paused))

    def ids(self) -> list[str]:
        return sorted(self._ids)

    def path(self, sandbox_id: str) -> Path:
        """The directory of a known sandbox, or NOT_FOUND."""
        validate_sandbox_id(sandbox_id)
        if sandbox_id not in self._ids:
            raise NotFound(f"sandbox {sandbox_id} not found on this host")
        return self.root / sandbox_id

    async def create(self, sandbox_id: str) -> Path:
        """Create the sandbox, or return the existing one."""
        validate_sandbox_id(sandbox_id)
        path = self.root / sandbox_id
        if sandbox_id not in self._ids:
            await run_blocking(self._make_directory, path)
            self._ids.add(sandbox_id)
            log.info("created sandbox %s", sandbox_id)
        return path

    def _make_directory(self, path: Path) -> None:
        path.mkdir(mode=0o711, exist_ok=True)
        self.runtime.prepare_sandbox(path)

    def forget(self, sandbox_id: str) -> Path:
        """Drop the sandbox from the known set; the caller then deletes its directory."""
        path = self.path(sandbox_id)
        self._ids.discard(sandbox_id)
        self._paused.discard(sandbox_id)
        return path

    def paused(self, sandbox_id: str) -> bool:
        return sandbox_id in self._paused

    async def set_paused(self, sandbox_id: str, paused: bool) -> None:
        marker = self.path(sandbox_id) / PAUSED_MARKER
        if paused:
            await run_blocking(
                marker.write_text, "paused by the control plane; ResumeSandbox clears this file\n"
            )
            self._paused.add(sandbox_id)
        else:
            await run_blocking(marker.unlink, missing_ok=True)
            self._paused.discard(sandbox_id)

    async def trash(self, path: Path) -> Path:
        """Rename a forgotten sandbox's directory aside, so the id can have a fresh one at once."""
        trash = path.with_name(f"{TRASH_PREFIX}{path.name}-{uuid.uuid4().hex[:8]}")
        await run_blocking(path.rename, trash)
        return trash

    async def delete(self, trash: Path) -> None:
        """Delete a directory `trash` put aside (a crashed delete is finished by the next start)."""
        await run_blocking(_remove_tree, trash)
