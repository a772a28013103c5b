"""Command line of the host agent: `python -m hostagent --listen ADDR --data-dir DIR --runtime R`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import urllib.parse
from pathlib import Path

from hostagent.config import DEFAULT_CGROUP_ROOT, NOBODY_UID, AgentConfig
from hostagent.freezer import MECHANISMS, FreezerUnavailable
from hostagent.heartbeat import HeartbeatConfig
from hostagent.network import (
    DEFAULT_POOL,
    DEFAULT_PREFIX,
    DEFAULT_TABLE,
    PREFIX_RE,
    TABLE_NAME_RE,
    NetworkConfig,
    pool_argument,
)
from hostagent.oci import MAX_SLOTS, UID_BASE, UID_RANGE, UID_TOP
from hostagent.processes import MAX_PROCESSES, PROCESS_BUFFER
from hostagent.recorder import BACKLOG_LIMIT
from hostagent.replay import DEFAULT_LIMIT
from hostagent.runtime import Defaults
from hostagent.runtimes import RUNTIMES, RuntimeUnavailable
from hostagent.server import serve

log = logging.getLogger("hostagent")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ
    parser = argparse.ArgumentParser(prog="python -m hostagent", description=__doc__)
    parser.add_argument(
        "--listen",
        default=env.get("HOSTAGENT_LISTEN", "127.0.0.1:50071"),
        help="gRPC address to listen on (env HOSTAGENT_LISTEN; default 127.0.0.1:50071)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(env.get("HOSTAGENT_DATA_DIR", "./var/hostagent")),
        help="where capsule directories live (env HOSTAGENT_DATA_DIR; default ./var/hostagent)",
    )
    parser.add_argument(
        "--runtime",
        choices=RUNTIMES,
        default=env.get("HOSTAGENT_RUNTIME", "auto"),
        help="sandbox runtime (env HOSTAGENT_RUNTIME; default auto: oci (runc) if it works here, "
        "else bwrap, else plain processes, each step down with a loud warning)",
    )
    parser.add_argument(
        "--pids-limit",
        type=int,
        default=env.get("HOSTAGENT_PIDS_LIMIT", "1024"),
        help="processes (and threads) a capsule may have at once (env HOSTAGENT_PIDS_LIMIT; default 1024)",
    )
    parser.add_argument(
        "--uid-base",
        type=int,
        default=env.get("HOSTAGENT_UID_BASE", str(UID_BASE)),
        help="first host uid of the capsules' uid ranges, 65,536 per capsule (env HOSTAGENT_UID_BASE; "
        f"default {UID_BASE}); two agents on one machine need ranges apart",
    )
    parser.add_argument(
        "--network-pool",
        type=pool_argument,
        default=env.get("HOSTAGENT_NETWORK_POOL", DEFAULT_POOL),
        help="IPv4 range capsule networks are cut from, a /30 each (env HOSTAGENT_NETWORK_POOL; "
        f"default {DEFAULT_POOL}); two agents on one machine need one each, as with the next two",
    )
    parser.add_argument(
        "--network-table",
        default=env.get("HOSTAGENT_NETWORK_TABLE", DEFAULT_TABLE),
        help=f"nftables table (inet family) of the capsule filters (default {DEFAULT_TABLE})",
    )
    parser.add_argument(
        "--network-prefix",
        default=env.get("HOSTAGENT_NETWORK_PREFIX", DEFAULT_PREFIX),
        help=f"name prefix of the host ends of capsule veths (default {DEFAULT_PREFIX})",
    )
    parser.add_argument(
        "--default-disk-mb",
        type=int,
        default=env.get("HOSTAGENT_DEFAULT_DISK_MB", "1024"),
        help="writable space of a capsule created with disk_size_mb 0 (env HOSTAGENT_DEFAULT_DISK_MB; "
        "default 1024)",
    )
    parser.add_argument(
        "--sandbox-uid",
        type=int,
        default=int(env.get("HOSTAGENT_SANDBOX_UID", NOBODY_UID)),
        help="unprivileged host uid that runs bwrap when the agent runs as root "
        "(env HOSTAGENT_SANDBOX_UID; default 65534, nobody)",
    )
    parser.add_argument(
        "--token-file",
        type=Path,
        default=env.get("HOSTAGENT_TOKEN_FILE"),
        help="file holding the token every call must carry (env HOSTAGENT_TOKEN_FILE, or the token "
        "itself in HOSTAGENT_TOKEN); without one the agent accepts any caller",
    )
    parser.add_argument(
        "--pause-mechanism",
        choices=MECHANISMS,
        default=env.get("HOSTAGENT_PAUSE_MECHANISM", "auto"),
        help="how PauseSandbox freezes a capsule (env HOSTAGENT_PAUSE_MECHANISM; default auto: the "
        "cgroup v2 freezer, else the v1 freezer, else SIGSTOP/SIGCONT)",
    )
    parser.add_argument(
        "--cgroup-root",
        default=env.get("HOSTAGENT_CGROUP_ROOT", DEFAULT_CGROUP_ROOT),
        help="cgroup, below the agent's own (v2) or the freezer hierarchy's root (v1), that holds one "
        f"cgroup per capsule (env HOSTAGENT_CGROUP_ROOT; default {DEFAULT_CGROUP_ROOT})",
    )
    parser.add_argument(
        "--control-plane",
        default=env.get("HOSTAGENT_CONTROL_PLANE") or None,
        help="base URL of the control plane to send heartbeats to, e.g. http://127.0.0.1:8000 "
        "(env HOSTAGENT_CONTROL_PLANE); without it no heartbeats are sent",
    )
    parser.add_argument(
        "--register-token-file",
        type=Path,
        default=env.get("HOSTAGENT_REGISTER_TOKEN_FILE"),
        help="file holding the host token an operator issued, sent with every heartbeat (env "
        "HOSTAGENT_REGISTER_TOKEN_FILE, or the token itself in HOSTAGENT_REGISTER_TOKEN); required "
        "with --control-plane",
    )
    parser.add_argument(
        "--advertise",
        default=env.get("HOSTAGENT_ADVERTISE") or None,
        help="gRPC address the control plane should dial (env HOSTAGENT_ADVERTISE; default --listen)",
    )
    parser.add_argument(
        "--heartbeat-interval",
        type=float,
        default=float(env.get("HOSTAGENT_HEARTBEAT_INTERVAL", "10")),
        help="seconds between heartbeats until the control plane says otherwise "
        "(env HOSTAGENT_HEARTBEAT_INTERVAL; default 10)",
    )
    parser.add_argument(
        "--replay-buffer",
        type=int,
        # A string default goes through `type` too: a bad environment value gets a usage error.
        default=env.get("HOSTAGENT_REPLAY_BUFFER", str(DEFAULT_LIMIT)),
        metavar="BYTES",
        help="recent output each PTY session keeps, for clients that resume or replay it "
        f"(env HOSTAGENT_REPLAY_BUFFER; default {DEFAULT_LIMIT}, 1 MiB)",
    )
    parser.add_argument(
        "--process-buffer",
        type=int,
        default=env.get("HOSTAGENT_PROCESS_BUFFER", str(PROCESS_BUFFER)),
        metavar="BYTES",
        help="recent output each process of the API (exec) keeps, for streams that attach late or "
        f"resume (env HOSTAGENT_PROCESS_BUFFER; default {PROCESS_BUFFER}, 256 KiB)",
    )
    parser.add_argument(
        "--max-processes",
        type=int,
        default=env.get("HOSTAGENT_MAX_PROCESSES", str(MAX_PROCESSES)),
        metavar="N",
        help="processes of the API (exec) one sandbox may run at once, and ended ones it keeps "
        f"for late attaches (env HOSTAGENT_MAX_PROCESSES; default {MAX_PROCESSES})",
    )
    parser.add_argument(
        "--recording-backlog",
        type=int,
        default=env.get("HOSTAGENT_RECORDING_BACKLOG", str(BACKLOG_LIMIT)),
        metavar="BYTES",
        help="recording lines each recorded terminal holds while the control plane cannot take them; "
        "past it lines are dropped and a marker says how many (env HOSTAGENT_RECORDING_BACKLOG; "
        f"default {BACKLOG_LIMIT}, 8 MiB)",
    )
    args = parser.parse_args(argv)
    if args.recording_backlog < 64 * 1024:
        parser.error("--recording-backlog must be at least 65536 bytes")
    if args.process_buffer < 0:
        parser.error("--process-buffer must be a number of bytes, 0 or more")
    if not 1 <= args.max_processes <= 65536:
        parser.error("--max-processes must be between 1 and 65536")
    if args.replay_buffer < 0:
        parser.error("--replay-buffer must be a number of bytes, 0 or more")
    if not 16 <= args.pids_limit <= 4_194_304:
        parser.error("--pids-limit must be between 16 and 4194304")
    if not 16 <= args.default_disk_mb <= 1024 * 1024:
        parser.error("--default-disk-mb must be between 16 and 1048576")
    if not UID_BASE <= args.uid_base <= UID_TOP - MAX_SLOTS * UID_RANGE:
        parser.error(f"--uid-base must be between {UID_BASE} and {UID_TOP - MAX_SLOTS * UID_RANGE}")
    if not TABLE_NAME_RE.fullmatch(args.network_table):
        parser.error("--network-table must be up to 32 of a-z, 0-9 and _")
    if not PREFIX_RE.fullmatch(args.network_prefix):
        parser.error("--network-prefix must be 1 to 10 of a-z and 0-9")
    if args.sandbox_uid <= 0:
        parser.error("--sandbox-uid must be an unprivileged uid, not root")
    if not args.heartbeat_interval > 0:
        parser.error("--heartbeat-interval must be a positive number of seconds")
    if args.control_plane is not None:
        url = urllib.parse.urlsplit(args.control_plane)
        if url.scheme not in ("http", "https") or not url.netloc:
            parser.error(f"--control-plane must be an http:// or https:// URL, not {args.control_plane!r}")
        if args.register_token_file is None and not env_register_token():
            parser.error(
                "--control-plane needs the host's register token: --register-token-file F or "
                "HOSTAGENT_REGISTER_TOKEN"
            )
    return args


# Tokens on the command line would show in `ps`; they come from a file or the environment.


def env_token() -> str | None:
    return os.environ.get("HOSTAGENT_TOKEN") or None


def env_register_token() -> str | None:
    return os.environ.get("HOSTAGENT_REGISTER_TOKEN") or None


def read_token(path: Path, what: str) -> str:
    token = path.read_text().strip()
    if not token:
        raise RuntimeError(f"{what} file {path} is empty")
    return token


def build_config(args: argparse.Namespace) -> AgentConfig:
    heartbeat = None
    if args.control_plane is not None:
        register_token = (
            read_token(args.register_token_file, "register token")
            if args.register_token_file
            else env_register_token()
        )
        assert register_token  # noqa: S101 - parse_args refuses --control-plane without one
        heartbeat = HeartbeatConfig(
            control_plane=args.control_plane,
            register_token=register_token,
            advertise=args.advertise or args.listen,
            interval=args.heartbeat_interval,
        )
    return AgentConfig(
        listen=args.listen,
        data_dir=args.data_dir,
        runtime=args.runtime,
        sandbox_uid=args.sandbox_uid,
        token=args.token_file.read_text().strip() if args.token_file else env_token(),
        pause_mechanism=args.pause_mechanism,
        cgroup_root=args.cgroup_root,
        heartbeat=heartbeat,
        replay_buffer=args.replay_buffer,
        process_buffer=args.process_buffer,
        max_processes=args.max_processes,
        recording_backlog=args.recording_backlog,
        limits=Defaults(pids=args.pids_limit, disk_mb=args.default_disk_mb),
        uid_base=args.uid_base,
        network=NetworkConfig(pool=args.network_pool, table=args.network_table, prefix=args.network_prefix),
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=os.environ.get("HOSTAGENT_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        asyncio.run(serve(build_config(args)))
    except (RuntimeUnavailable, FreezerUnavailable, RuntimeError, OSError, ValueError) as exc:
        log.error("hostagent cannot start: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
