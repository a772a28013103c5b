#!/usr/bin/env python3
"""A terminal into a capsule using only the documented WebSocket protocol.

    python examples/terminal_client.py --url ws://127.0.0.1:8000 --key wrn_... CAPSULE_ID
    python examples/terminal_client.py ... --connect pty-1a2b3c4d CAPSULE_ID   # rejoin a session
    python examples/terminal_client.py ... --cmd /bin/sh --arg -c --arg 'uname -a' CAPSULE_ID

Interactive when stdin is a terminal (raw mode, window size followed); otherwise
stdin is sent as input and the exit code of the remote process is returned.
Needs only the `websockets` package.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import signal
import sys
import termios
import tty
from typing import Any

from websockets.asyncio.client import ClientConnection, connect


async def send(ws: ClientConnection, **message: Any) -> None:
    await ws.send(json.dumps(message))


async def pump_stdin(ws: ClientConnection) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while data := await reader.read(65536):
        await send(ws, type="input", data=base64.b64encode(data).decode())


async def follow_size(ws: ClientConnection, resized: asyncio.Event) -> None:
    """Sends the window's size whenever SIGWINCH says it changed (the latest, after several)."""
    while True:
        await resized.wait()
        resized.clear()
        size = shutil.get_terminal_size()
        await send(ws, type="resize", cols=size.columns, rows=size.lines)


async def session(args: argparse.Namespace) -> int:
    url = f"{args.url.rstrip('/')}/v1/capsules/{args.capsule}/pty"
    interactive = sys.stdin.isatty()
    # The reference JSON dialect, stated, so the server never waits to recognise it.
    url += "?dialect=json"
    async with connect(url, additional_headers=[("X-API-Key", args.key)], max_size=None) as ws:
        cols, rows = shutil.get_terminal_size()
        if args.connect:
            await send(ws, type="connect", tag=args.connect)
        else:
            await send(ws, type="start", cmd=args.cmd, args=args.arg, cols=cols, rows=rows)
        loop = asyncio.get_running_loop()
        tasks = [loop.create_task(pump_stdin(ws))]
        if interactive:
            resized = asyncio.Event()
            loop.add_signal_handler(signal.SIGWINCH, resized.set)
            tasks.append(loop.create_task(follow_size(ws, resized)))
        try:
            async for raw in ws:
                frame = json.loads(raw)
                kind = frame["type"]
                if kind == "output":
                    os.write(sys.stdout.fileno(), base64.b64decode(frame["data"]))
                elif kind == "started":
                    print(f"[session {frame['tag']}, pid {frame['pid']}]", file=sys.stderr, end="\r\n")
                elif kind == "ping":
                    await send(ws, type="pong")
                elif kind == "exit":
                    return int(frame["exit_code"])
                elif kind == "error":
                    print(f"[error: {frame['data']}]", file=sys.stderr, end="\r\n")
                    if frame.get("fatal"):
                        return 255
        finally:
            if interactive:
                loop.remove_signal_handler(signal.SIGWINCH)
            for task in tasks:
                task.cancel()
    return 255


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("capsule", help="capsule id, e.g. cl-...")
    parser.add_argument("--url", default=os.environ.get("WRENN_URL", "ws://127.0.0.1:8000"))
    parser.add_argument("--key", default=os.environ.get("WRENN_API_KEY"), help="API key (or WRENN_API_KEY)")
    parser.add_argument(
        "--connect", metavar="TAG", help="attach to a running session instead of starting one"
    )
    parser.add_argument("--cmd", default="/bin/bash")
    parser.add_argument("--arg", action="append", default=[], help="an argument for --cmd (repeatable)")
    args = parser.parse_args()
    if not args.key:
        parser.error("an API key is required: --key or WRENN_API_KEY")
    if not sys.stdin.isatty():
        return asyncio.run(session(args))
    saved = termios.tcgetattr(sys.stdin)
    tty.setraw(sys.stdin)
    try:
        return asyncio.run(session(args))
    finally:
        termios.tcsetattr(sys.stdin, termios.TCSADRAIN, saved)


if __name__ == "__main__":
    sys.exit(main())
