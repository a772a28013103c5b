"""The replay buffer and the backlog a resuming subscriber gets first."""

from __future__ import annotations

import pytest

from hostagent.errors import InvalidArgument
from hostagent.replay import SEAL, ReplayBuffer
from hostagent.subscribers import BACKLOG_CHUNK, Missed, Output, backlog

OUTPUT = b"".join(f"{n}\n".encode() for n in range(1, 30001))


def _filled(limit: int, data: bytes = OUTPUT, piece: int = 777) -> ReplayBuffer:
    buffer = ReplayBuffer(limit)
    for at in range(0, len(data), piece):
        buffer.append(data[at : at + piece])
    return buffer


def test_a_buffer_under_its_limit_holds_everything() -> None:
    buffer = _filled(1024 * 1024)
    assert (buffer.start, buffer.end) == (0, len(OUTPUT))
    assert buffer.read(0) == (0, OUTPUT)


@pytest.mark.parametrize("piece", [1, 100, 4095, SEAL, 3 * SEAL])
def test_the_buffer_keeps_exactly_the_last_limit_bytes(piece: int) -> None:
    data = OUTPUT[:50_000] if piece == 1 else OUTPUT
    buffer = _filled(4096, data, piece)
    assert (buffer.start, buffer.end) == (len(data) - 4096, len(data))
    assert buffer.read(buffer.start) == (len(data) - 4096, data[-4096:])


def test_read_from_the_middle_of_a_chunk() -> None:
    buffer = _filled(1024 * 1024, piece=SEAL + 123)
    assert buffer.read(SEAL + 7, 10) == (SEAL + 7, OUTPUT[SEAL + 7 : SEAL + 17])
    assert buffer.read(12345) == (12345, OUTPUT[12345:])


def test_read_of_evicted_bytes_starts_at_the_buffer_start() -> None:
    buffer = _filled(4096)
    assert buffer.read(10, 100) == (buffer.start, OUTPUT[buffer.start : buffer.start + 100])


def test_read_at_the_end_is_empty() -> None:
    buffer = _filled(4096)
    assert buffer.read(len(OUTPUT), 100) == (len(OUTPUT), b"")


def test_read_beyond_the_end_is_an_invalid_argument() -> None:
    buffer = _filled(4096)
    with pytest.raises(InvalidArgument) as caught:
        buffer.read(len(OUTPUT) + 1)
    assert (
        caught.value.message
        == f"offset {len(OUTPUT) + 1} is beyond the end of the output ({len(OUTPUT)} bytes)"
    )


def test_a_zero_limit_keeps_nothing_but_counts() -> None:
    buffer = _filled(0)
    assert buffer.read(0) == (len(OUTPUT), b"")


def test_neutralised_read_catches_a_query_split_across_appends() -> None:
    buffer = ReplayBuffer()
    for piece in (b"ab\x1b", b"[", b"6ncd"):
        buffer.append(piece)
    assert buffer.read_neutralised(0) == (0, b"ab\0\0\0\0cd")
    assert buffer.read(0) == (0, b"ab\x1b[6ncd")


def test_neutralised_reads_catch_a_query_straddling_their_edge() -> None:
    buffer = ReplayBuffer()
    buffer.append(b"ab\x1b]11;?\x07cd")
    assert buffer.read_neutralised(0, 5) == (0, b"ab\0\0\0")
    assert buffer.read_neutralised(5, 100) == (5, b"\0" * 4 + b"cd")


def test_no_backlog_for_a_plain_attach() -> None:
    assert backlog(_filled(4096), None) == []


def test_resume_backlog_starts_exactly_at_the_offset_in_pieces() -> None:
    buffer = _filled(1024 * 1024)
    events = backlog(buffer, 1001)
    assert all(isinstance(e, Output) and len(e.data) <= BACKLOG_CHUNK for e in events)
    outputs = [e for e in events if isinstance(e, Output)]
    assert [e.offset for e in outputs] == list(range(1001, len(OUTPUT), BACKLOG_CHUNK))
    assert b"".join(e.data for e in outputs) == OUTPUT[1001:]


def test_resume_backlog_of_evicted_bytes_says_how_many_were_missed() -> None:
    buffer = _filled(4096)
    start = len(OUTPUT) - 4096
    assert backlog(buffer, 100) == [
        Missed(offset=start, bytes=start - 100),
        Output(OUTPUT[start:], start),
    ]


def test_resume_backlog_at_the_end_is_empty() -> None:
    assert backlog(_filled(4096), len(OUTPUT)) == []


def test_resume_backlog_beyond_the_end_is_an_invalid_argument() -> None:
    with pytest.raises(InvalidArgument):
        backlog(_filled(4096), len(OUTPUT) + 1)


def test_a_neutralised_read_from_the_start_is_the_whole_buffer_with_queries_replaced() -> None:
    buffer = ReplayBuffer(4096)
    buffer.append(b"x" * 5000)
    buffer.append(b"<\x1b[6n>")
    assert buffer.read_neutralised(buffer.start) == (5006 - 4096, b"x" * 4090 + b"<\0\0\0\0>")
