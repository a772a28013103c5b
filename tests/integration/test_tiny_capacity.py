"""Redis' list channel layer at a capacity of one message: it drops the rest silently, and a
viewer on another worker still gets every byte, refilled from the host agent.

The agent keeps 8 MiB, more than the output: the leader's own client (whose socket the
kernel buffers megabytes for) sets the pace, and the refilling viewer may trail it by more
than the default 1 MiB, which would be reported as missed, as designed.
"""

from __future__ import annotations

import hashlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from tests.support.stack import Stack, running_stack
from tests.support.terminal import JSON_DIALECT, Terminal

pytestmark = [pytest.mark.timeout(180)]

# How much output the first viewer gets while the second one's worker is stopped: several 64 KiB
# messages, well within how far the leader may run ahead of a viewer that does not note progress.
STOPPED_FOR = 256 * 1024


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = {"WRENN_CHANNEL_LAYER": "redis-list", "WRENN_CHANNEL_CAPACITY": "1"}
    with running_stack(
        Path(tmp_path_factory.mktemp("tiny")),
        workers=2,
        env=env,
        agent_args=["--replay-buffer", str(8 << 20)],
        ping=(20, 30),
    ) as running:
        yield running


def refills(stack: Stack) -> int:
    """How many times a worker refilled output lost on the way, from the workers' logs."""
    return sum(log.read_text().count("lost on the way") for log in stack.data_dir.glob("daphne-*.log"))


async def test_a_viewer_gets_every_byte_through_a_layer_that_holds_one_message(tiny: Stack) -> None:
    demo = tiny.demo()
    headers = [("X-API-Key", demo["api_key"])]
    script = (
        "stty raw -echo; head -c 6000000 /dev/urandom > /tmp/tiny; read go; "
        "printf '<BEGIN>'; cat /tmp/tiny; printf '<END>'; sha256sum /tmp/tiny | cut -c1-64; read x"
    )
    urls = [f"{tiny.ws_url(worker)}/v1/capsules/{demo['capsule_id']}/pty" for worker in (0, 1)]
    async with connect(
        urls[0], subprotocols=JSON_DIALECT, additional_headers=headers, max_size=None
    ) as first_socket:
        first = Terminal.over_websocket(first_socket)
        tag = (await first.start(cmd="/bin/sh", args=["-c", script]))["tag"]
        async with connect(
            urls[1], subprotocols=JSON_DIALECT, additional_headers=headers, max_size=None
        ) as second_socket:
            second = Terminal.over_websocket(second_socket)
            await second.send(type="connect", tag=tag, offset=0)
            await second.roster(lambda viewers: len(viewers) == 2)  # it has joined the audience
            # The second viewer's worker stops while the output starts: everything published for
            # it meanwhile piles up in its channel, which keeps one message, so the layer surely
            # drops some (without the stop, whether it does is a matter of timing).
            worker = tiny.workers[1][1]
            os.kill(worker.pid, signal.SIGSTOP)
            try:
                await first.type("go\n")
                await first.read_until(b"<BEGIN>", timeout=120)
                while len(first.output) - bytes(first.output).index(b"<BEGIN>") < STOPPED_FOR:
                    await first.recv()
            finally:
                os.kill(worker.pid, signal.SIGCONT)
            await second.read_until(b"<END>", timeout=120)
            while len(bytes(second.output).rsplit(b"<END>", 1)[1].strip()) < 64:
                await second.recv()
            await second.send(type="kill")
    output = bytes(second.output)
    assert second.missed == []
    blob = output[output.index(b"<BEGIN>") + 7 : output.rindex(b"<END>")]
    assert len(blob) == 6_000_000
    assert hashlib.sha256(blob).hexdigest().encode() == output.rsplit(b"<END>", 1)[1].strip()[:64]
    lost = refills(tiny)
    print(f"{lost} refills of output the layer dropped")
    assert lost > 0  # the layer really dropped messages on the way
