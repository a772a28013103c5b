"""A terminal client that starts a session, prints its tag, then hangs (the test SIGSTOPs it)."""

import asyncio
import json
import sys

from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

# A stated dialect (pty/dialects.py). Run as a script: the tests package is not importable here.
JSON_DIALECT = [Subprotocol("wrenn.json.v1")]


async def main(url: str, key: str) -> None:
    async with connect(url, subprotocols=JSON_DIALECT, additional_headers=[("X-API-Key", key)]) as websocket:
        await websocket.send(json.dumps({"type": "start", "cmd": "/bin/cat"}))
        while True:
            frame = json.loads(await websocket.recv())
            if frame["type"] == "started":
                print(frame["tag"], flush=True)
                await asyncio.sleep(3600)


asyncio.run(main(sys.argv[1], sys.argv[2]))
