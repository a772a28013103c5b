"""Everything `serve()` needs, as parsed from the command line and the environment."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from hostagent.heartbeat import HeartbeatConfig
from hostagent.network import NetworkConfig
from hostagent.processes import MAX_PROCESSES, PROCESS_BUFFER
from hostagent.recorder import BACKLOG_LIMIT
from hostagent.replay import DEFAULT_LIMIT
from hostagent.runtime import Defaults

NOBODY_UID = 65534
DEFAULT_CGROUP_ROOT = "wrenn-hostagent"


@dataclass(frozen=True)
class AgentConfig:
    listen: str
    data_dir: Path
    runtime: str = "auto"
    sandbox_uid: int = NOBODY_UID
    # Every RPC must carry it; None accepts any caller.
    token: str | None = None
    pause_mechanism: str = "auto"
    cgroup_root: str = DEFAULT_CGROUP_ROOT
    # None: no control plane to report to.
    heartbeat: HeartbeatConfig | None = None
    # Bytes of recent output each PTY session keeps for resuming and replaying.
    replay_buffer: int = DEFAULT_LIMIT
    # Processes the API runs (exec): the recent output each keeps, how many may run at once in
    # one sandbox, and how many ended ones it keeps for late attaches.
    process_buffer: int = PROCESS_BUFFER
    max_processes: int = MAX_PROCESSES
    # Recording lines a recorded terminal holds while the control plane cannot take them.
    recording_backlog: int = BACKLOG_LIMIT
    # What a capsule gets when its create leaves a limit at 0, and the per-capsule process limit.
    limits: Defaults = field(default_factory=Defaults)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    # The first host uid of the OCI capsules' uid ranges.
    uid_base: int = 1 << 20
