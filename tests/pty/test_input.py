"""InputPump on its own: order, merging and backpressure, with a recording sender."""

from __future__ import annotations

import asyncio

import pytest

from pty.input import HIGH_WATER, MAX_BATCH, InputPump, Op

pytestmark = [pytest.mark.timeout(10)]


class Recorder:
    def __init__(self) -> None:
        self.sent: list[Op] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def __call__(self, op: Op) -> None:
        await self.gate.wait()
        self.sent.append(op)


async def run_until_drained(pump: InputPump) -> None:
    task = asyncio.create_task(pump.run())
    await asyncio.sleep(0)
    await pump.drained()
    task.cancel()


async def test_consecutive_input_is_merged_in_order() -> None:
    recorder = Recorder()
    pump = InputPump(recorder)
    for chunk in (b"ab", b"cd", b"ef"):
        pump.submit(Op("input", data=chunk))
    await run_until_drained(pump)
    assert recorder.sent == [Op("input", data=b"abcdef")]


async def test_resize_and_kill_keep_their_place() -> None:
    recorder = Recorder()
    pump = InputPump(recorder)
    ops = [
        Op("input", data=b"a"),
        Op("input", data=b"b"),
        Op("resize", cols=100, rows=30),
        Op("input", data=b"c"),
        Op("kill"),
        Op("input", data=b"d"),
    ]
    for op in ops:
        pump.submit(op)
    await run_until_drained(pump)
    assert recorder.sent == [
        Op("input", data=b"ab"),
        Op("resize", cols=100, rows=30),
        Op("input", data=b"c"),
        Op("kill"),
        Op("input", data=b"d"),
    ]


async def test_batches_are_bounded_and_lose_nothing() -> None:
    recorder = Recorder()
    pump = InputPump(recorder)
    chunk = bytes(range(256)) * 256  # 64 KiB
    for _ in range(10):
        pump.submit(Op("input", data=chunk))
    await run_until_drained(pump)
    assert b"".join(op.data for op in recorder.sent) == chunk * 10
    assert all(len(op.data) <= MAX_BATCH + len(chunk) for op in recorder.sent)


async def test_reader_waits_for_room_when_the_sender_is_behind() -> None:
    recorder = Recorder()
    recorder.gate.clear()  # the host agent is not answering
    pump = InputPump(recorder)
    task = asyncio.create_task(pump.run())
    pump.submit(Op("input", data=b"x" * HIGH_WATER))
    waiter = asyncio.create_task(pump.wait_for_room())
    await asyncio.sleep(0.05)
    assert not waiter.done()
    recorder.gate.set()
    await waiter
    await pump.drained()
    assert b"".join(op.data for op in recorder.sent) == b"x" * HIGH_WATER
    task.cancel()
