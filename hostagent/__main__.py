"""Command line of the host agent: `python -m hostagent --listen ADDR --data-dir DIR --runtime R`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

from hostagent.runtime import RuntimeUnavailable
from hostagent.server import serve

log = logging.getLogger("hostagent")

NOBODY_UID = 65534


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
        choices=("auto", "bwrap", "process"),
        default=env.get("HOSTAGENT_RUNTIME", "auto"),
        help="sandbox runtime (env HOSTAGENT_RUNTIME; default auto: bwrap if it works here)",
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
    args = parser.parse_args(argv)
    if args.sandbox_uid <= 0:
        parser.error("--sandbox-uid must be an unprivileged uid, not root")
    return args


def env_token() -> str | None:
    # A token on the command line would show in `ps`; it comes from a file or the environment.
    return os.environ.get("HOSTAGENT_TOKEN") or None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=os.environ.get("HOSTAGENT_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        token = args.token_file.read_text().strip() if args.token_file else env_token()
        asyncio.run(serve(args.listen, args.data_dir, args.runtime, args.sandbox_uid, token))
    except (RuntimeUnavailable, RuntimeError, OSError) as exc:
        log.error("hostagent cannot start: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
