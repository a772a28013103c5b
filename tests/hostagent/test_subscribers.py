"""A stream's queue on its own (hostagent.subscribers.Subscriber): merging and coalescing."""

from __future__ import annotations

import asyncio

import pytest

from hostagent.subscribers import BACKLOG_CHUNK, STREAMING_BYTES, Output, Subscriber

pytestmark = pytest.mark.timeout(10)


async def test_a_lone_small_output_is_taken_at_once() -> None:
    queue = Subscriber(lambda: None)
    queue.push(Output(b"x", 0))  # an echo: nothing streams
    assert not queue.streaming()
    assert await asyncio.wait_for(queue.get(), 0.5) == Output(b"x", 0)


async def test_while_output_streams_small_pieces_wait_to_be_taken_together() -> None:
    queue = Subscriber(lambda: None, coalesce_delay=0.05, streaming_window=10.0)
    queue.push(Output(b"a" * STREAMING_BYTES, 0))  # a burst: output streams
    assert queue.streaming()
    assert await queue.get() == Output(b"a" * STREAMING_BYTES, 0)
    queue.push(Output(b"b" * 100, STREAMING_BYTES))
    taking = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    queue.push(Output(b"c" * 100, STREAMING_BYTES + 100))  # arrives while the first one waits
    assert await taking == Output(b"b" * 100 + b"c" * 100, STREAMING_BYTES)


async def test_a_full_chunk_is_taken_without_waiting() -> None:
    queue = Subscriber(lambda: None, coalesce_delay=60.0)  # would time the test out
    queue.push(Output(b"a" * STREAMING_BYTES, 0))
    queue.push(Output(b"b" * BACKLOG_CHUNK, STREAMING_BYTES))
    assert queue.streaming()
    assert await asyncio.wait_for(queue.get(), 1) == Output(b"a" * STREAMING_BYTES, 0)
    assert await asyncio.wait_for(queue.get(), 1) == Output(b"b" * BACKLOG_CHUNK, STREAMING_BYTES)


async def test_streaming_ends_when_output_stops() -> None:
    queue = Subscriber(lambda: None, streaming_window=0.02)
    queue.push(Output(b"a" * STREAMING_BYTES, 0))
    assert queue.streaming()
    await asyncio.sleep(0.1)
    assert not queue.streaming()
