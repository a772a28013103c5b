"""The recorder on its own: whatever a capsule writes, every line is one asciicast event, output
round-trips, and both bounds (the backlog, the size cap) hold."""

from __future__ import annotations

import json
from typing import Any

import pytest

from hostagent.recorder import CAP_RESERVE, Chunk, Recorder, RecordingOptions

pytestmark = pytest.mark.timeout(30)

HOSTILE = [
    b'"]\n[0.0, "o", "fake event"]\n',
    b"\\",
    b'\\"',
    b"\n\r\n\x00\x07\x1b[2J\x1b]0;title\x07",
    b'{"version": 2}\n',
    "\u2028\u2029\x85".encode(),
    b"\xff\xfe\xc3",  # not UTF-8, and a lead byte cut short
    b"\xa9 after the cut",
    "😀 four bytes".encode(),
    b"\x1bP1$r0m\x1b\\",
]


def parse(data: bytes) -> tuple[dict[str, Any], list[list[Any]]]:
    lines = data.split(b"\n")
    assert lines[-1] == b"", "the cast ends with a newline"
    for line in lines[:-1]:
        line.decode("ascii")  # plain ASCII: any line splitter sees the same lines
    header = json.loads(lines[0])
    events = [json.loads(line) for line in lines[1:-1]]
    for event in events:
        assert isinstance(event, list), event
        assert len(event) == 3, event
        assert isinstance(event[0], float | int), event
        assert event[1] in "oirm", event
        assert isinstance(event[2], str), event
    return header, events


async def drain(recorder: Recorder) -> list[Chunk]:
    """Every chunk due now, as the pusher takes them (the final one too, once finished)."""
    chunks = []
    while recorder.pending or recorder.finished:
        chunk = await recorder.next_chunk(interval=0)
        if chunk is None:
            break
        chunks.append(chunk)
        recorder.sent(chunk)
    return chunks


def output_of(events: list[list[Any]]) -> str:
    return "".join(e[2] for e in events if e[1] == "o")


async def test_hostile_output_never_breaks_a_line_and_round_trips() -> None:
    recorder = Recorder(RecordingOptions(title="t"), 80, 24, "/bin/sh")
    for data in HOSTILE:
        recorder.output(data)
    recorder.finish(0)
    chunks = await drain(recorder)
    header, events = parse(b"".join(c.data for c in chunks))
    assert (header["version"], header["width"], header["height"]) == (2, 80, 24)
    assert (header["command"], header["title"]) == ("/bin/sh", "t")
    assert output_of(events) == b"".join(HOSTILE).decode("utf-8", errors="replace")
    assert (chunks[-1].final, chunks[-1].exit_code) == (True, 0)


async def test_a_character_split_across_reads_stays_whole() -> None:
    recorder = Recorder(RecordingOptions(), 80, 24, "sh")
    smile = "é😀".encode()
    for i in range(len(smile)):
        recorder.output(smile[i : i + 1])
    recorder.finish(0)
    _, events = parse(b"".join(c.data for c in await drain(recorder)))
    assert output_of(events) == "é😀"


async def test_valid_utf8_output_comes_back_byte_for_byte() -> None:
    written = "ls -la\r\n\x1b[01;34mdir\x1b[0m  naïve ✓\r\n".encode() * 50
    recorder = Recorder(RecordingOptions(), 80, 24, "sh")
    for start in range(0, len(written), 7):
        recorder.output(written[start : start + 7])
    recorder.finish(0)
    _, events = parse(b"".join(c.data for c in await drain(recorder)))
    assert output_of(events).encode() == written


async def test_resizes_and_markers_keep_their_place_among_output() -> None:
    recorder = Recorder(RecordingOptions(), 80, 24, "sh")
    recorder.output(b"before")
    recorder.resize(120, 40)
    recorder.mark("join user:alice")
    recorder.output(b"after")
    recorder.finish(1)
    _, events = parse(b"".join(c.data for c in await drain(recorder)))
    assert [(e[1], e[2]) for e in events] == [
        ("o", "before"),
        ("r", "120x40"),
        ("m", "join user:alice"),
        ("o", "after"),
    ]
    assert [e[0] for e in events] == sorted(e[0] for e in events)


async def test_input_is_recorded_only_when_asked() -> None:
    quiet = Recorder(RecordingOptions(input=False), 80, 24, "sh")
    loud = Recorder(RecordingOptions(input=True), 80, 24, "sh")
    for recorder in (quiet, loud):
        recorder.input(b"secret\r")
        recorder.finish(0)
    _, quiet_events = parse(b"".join(c.data for c in await drain(quiet)))
    _, loud_events = parse(b"".join(c.data for c in await drain(loud)))
    assert quiet_events == []
    assert [(e[1], e[2]) for e in loud_events] == [("i", "secret\r")]


async def test_chunks_are_whole_lines_with_their_offsets() -> None:
    recorder = Recorder(RecordingOptions(), 80, 24, "sh", chunk_size=1024)
    for i in range(200):
        recorder.output(f"line {i:04d}\n".encode())
    recorder.finish(0)
    chunks = await drain(recorder)
    assert len(chunks) > 5
    assert [c.seq for c in chunks] == list(range(len(chunks)))
    for chunk in chunks:
        assert chunk.data.endswith(b"\n")
    # Each chunk's offset is the output before its first event.
    for chunk in chunks[1:]:
        first = json.loads(chunk.data.split(b"\n", 1)[0])
        number = int(first[2].split()[1])
        assert chunk.offset == number * len(b"line 0000\n")
        assert chunk.time == first[0]


async def test_the_size_cap_stops_the_recording_with_a_marker() -> None:
    cap = 8192
    recorder = Recorder(RecordingOptions(max_bytes=cap), 80, 24, "yes")
    for _ in range(1000):
        recorder.output(b'y"\x1b\n' * 100)
    recorder.mark("kill")  # after the cap: nothing more is taken
    recorder.finish(0)
    data = b"".join(c.data for c in await drain(recorder))
    _, events = parse(data)
    assert len(data) <= cap
    assert len(data) > cap - CAP_RESERVE - 2000  # it stopped near the cap, not long before
    assert events[-1][1:] == ["m", f"recording stopped: it reached its size cap of {cap} bytes"]
    assert recorder.truncated


async def test_a_full_backlog_drops_lines_and_says_how_many_once_there_is_room() -> None:
    recorder = Recorder(RecordingOptions(), 80, 24, "sh", backlog=4096, chunk_size=1024)
    for _ in range(100):
        recorder.output(b"x" * 100)  # nothing is taken: the control plane is away
    assert recorder.held <= 4096
    assert recorder.lost_events > 0
    chunks = await drain(recorder)  # it is back
    recorder.output(b"back")
    recorder.finish(0)
    chunks += await drain(recorder)
    _, events = parse(b"".join(c.data for c in chunks))
    markers = [e[2] for e in events if e[1] == "m"]
    assert len(markers) == 1
    assert markers[0].startswith("recording lost ")
    assert "the control plane could not be reached" in markers[0]
    assert output_of(events).endswith("back")


async def test_an_abandoned_recording_holds_nothing_and_takes_nothing() -> None:
    recorder = Recorder(RecordingOptions(), 80, 24, "sh")
    recorder.output(b"x" * 1000)
    recorder.abandon()
    recorder.output(b"more")
    assert recorder.held == 0
    assert await recorder.next_chunk(interval=0) is None
    assert not recorder.mark("late")
