"""The workloads, each driving a target only through ``Shell`` (write, read, close).

Commands are typed into the shell, as a person would, so every target runs exactly the same
thing; a marker computed by the shell (``$((40+2))``) is what ends a wait, since the typed
command line itself never contains the result.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import statistics
import time
from dataclasses import dataclass

from bench.shells import MissedBytes, Output, Shell
from bench.targets import Target

MIB = 1024 * 1024


@dataclass(frozen=True)
class Sizes:
    keystrokes: int = 1000
    bulk_mib: int = 64
    sessions: tuple[int, ...] = (50, 200, 1000)
    session_seconds: float = 10.0
    prompts: int = 20
    fanout_viewers: int = 10
    fanout_lines: int = 1_000_000
    # Capsules created (and destroyed) one after another on a host agent alone; idle memory is
    # measured with all of them live, and an idle shell is opened in the first `terminals`.
    capsules: int = 50
    terminals: int = 20


QUICK = Sizes(
    keystrokes=200,
    bulk_mib=16,
    sessions=(50, 200),
    session_seconds=4.0,
    prompts=5,
    fanout_lines=200_000,
    capsules=10,
    terminals=5,
)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def ready(shell: Shell, output: Output, setup: str = "stty -echo") -> None:
    """Runs ``setup`` and waits until the shell has, so what follows is clean."""
    await shell.write(f"{setup}; echo READY-$((40+2))\r".encode())
    await output.until(b"READY-42")


async def raw_cat(shell: Shell) -> Output:
    """Turns the shell into `cat` in raw mode without echo: each keystroke comes back once."""
    output = Output(shell)
    await shell.write(b"stty raw -echo; echo READY-$((40+2)); exec cat\r")
    await output.until(b"READY-42")
    return output


async def keystroke(shell: Shell, output: Output, index: int) -> None:
    """Types one key into ``raw_cat`` and waits until it has come back."""
    key = bytes([ord("a") + index % 26])
    await shell.write(key)
    await output.until(key)


async def echo_command(shell: Shell, output: Output, name: bytes) -> None:
    """Runs `echo` in the shell and waits for its answer (the shell computes part of it)."""
    await shell.write(b"echo %s-$((0))\r" % name)
    await output.until(name + b"-0")


async def echo_latency(target: Target, sizes: Sizes) -> dict[str, float]:
    """Single keystrokes into `cat` in raw mode, each timed until it comes back."""
    shell = await target.open()
    try:
        output = await raw_cat(shell)
        timings = []
        for index in range(sizes.keystrokes):
            started = time.perf_counter()
            await keystroke(shell, output, index)
            timings.append((time.perf_counter() - started) * 1000)
    finally:
        await shell.close()
    return {"echo_p50_ms": statistics.median(timings), "echo_p99_ms": percentile(timings, 0.99)}


def bulk_command(mib: int) -> bytes:
    return f"head -c {mib * MIB} /dev/zero | tr '\\0' x | fold -w 127; echo BULK-$((40+2))\r".encode()


async def bulk_output(target: Target, sizes: Sizes) -> dict[str, float]:
    """MiB/s of a shell printing ``bulk_mib`` MiB, timed until the marker after it."""
    shell = await target.open()
    try:
        output = Output(shell)
        await ready(shell, output)
        started = time.perf_counter()
        await shell.write(bulk_command(sizes.bulk_mib))
        received = await output.until(b"BULK-42")
        elapsed = time.perf_counter() - started
    finally:
        await shell.close()
    if received < sizes.bulk_mib * MIB:
        raise AssertionError(f"{target.name}: {received} bytes arrived of {sizes.bulk_mib} MiB")
    return {"bulk_mib_s": sizes.bulk_mib / elapsed}


async def open_ready(target: Target, count: int, worker_of: int = 1) -> list[tuple[Shell, Output]]:
    """``count`` shells, opened 50 at a time and each ready for commands."""
    opened: list[tuple[Shell, Output]] = []
    for first in range(0, count, 50):

        async def one(index: int) -> tuple[Shell, Output]:
            shell = await target.open(worker=index % worker_of)
            output = Output(shell)
            await ready(shell, output)
            return shell, output

        batch = await asyncio.gather(
            *(one(i) for i in range(first, min(count, first + 50))), return_exceptions=True
        )
        opened += [item for item in batch if not isinstance(item, BaseException)]
        failed = [item for item in batch if isinstance(item, BaseException)]
        if failed:
            # The sessions that did open are closed, so that the target is left as it was.
            await asyncio.gather(*(shell.close() for shell, _ in opened), return_exceptions=True)
            raise RuntimeError(f"{len(opened)} of {count} sessions opened; then: {failed[0]}") from failed[0]
    return opened


async def many_sessions(target: Target, sizes: Sizes, count: int, pids: dict[str, int]) -> dict[str, float]:
    """``count`` sessions each running short `echo` commands, one after another, for a while.

    Every daphne-side session sits on one worker (worker 0) and one host agent. Memory per idle
    session is measured here too, before the commands start: resident memory of the server's
    processes with the sessions open, minus before, divided by ``count``.
    """
    before = {name: rss(pid) for name, pid in pids.items()}
    sessions = await open_ready(target, count)
    try:
        await asyncio.sleep(2)  # let allocations settle
        after = {name: rss(pid) for name, pid in pids.items()}
        memory_kib = sum(after[name] - before[name] for name in pids) / count / 1024 if pids else 0.0
        timings: list[float] = []
        deadline = time.perf_counter() + sizes.session_seconds

        async def loop(shell: Shell, output: Output, index: int) -> int:
            done = 0
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                await echo_command(shell, output, b"s%dc%d" % (index, done))
                timings.append((time.perf_counter() - started) * 1000)
                done += 1
            return done

        started = time.perf_counter()
        counts = await asyncio.gather(*(loop(s, o, i) for i, (s, o) in enumerate(sessions)))
        elapsed = time.perf_counter() - started
    finally:
        await asyncio.gather(*(shell.close() for shell, _ in sessions), return_exceptions=True)
    if min(counts) == 0:
        raise AssertionError(f"{target.name}: {counts.count(0)} of {count} sessions got no answer")
    figures = {
        f"sessions{count}_cmds_s": sum(counts) / elapsed,
        f"sessions{count}_p99_ms": percentile(timings, 0.99),
    }
    if pids:
        figures[f"sessions{count}_idle_kib"] = memory_kib
    return figures


async def time_to_prompt(target: Target, sizes: Sizes) -> dict[str, float]:
    """From opening the session (the WebSocket, or the PTY) to the first byte of the prompt."""
    timings = []
    for _ in range(sizes.prompts):
        started = time.perf_counter()
        shell = await target.open()
        try:
            await shell.read()
            timings.append((time.perf_counter() - started) * 1000)
        finally:
            await shell.close()
    return {"prompt_p50_ms": statistics.median(timings)}


def seq_stream(lines: int) -> bytes:
    """What `seq 1 N` shows on a terminal (newlines become CR LF)."""
    return b"".join(b"%d\r\n" % n for n in range(1, lines + 1))


async def fan_out(target: Target, sizes: Sizes) -> dict[str, float]:
    """One session, ``fanout_viewers`` viewers over two workers; each must get every byte in order.

    Compared with the same output to a lone viewer, in the same run. A viewer the server told
    it missed bytes (it fell out of the replay buffer) is counted, not timed.
    """
    expected = hashlib.sha256(seq_stream(sizes.fanout_lines)).hexdigest()
    lone, _ = await _fan(target, sizes, 1, expected)
    shared, complete = await _fan(target, sizes, sizes.fanout_viewers, expected)
    return {"fanout_lone_mib_s": lone, "fanout_viewer_mib_s": shared, "fanout_complete_viewers": complete}


async def _fan(target: Target, sizes: Sizes, viewers: int, expected: str) -> tuple[float, int]:
    """The median MiB/s of the viewers that got every byte, and how many did."""
    first = await target.open()
    others: list[Shell] = []
    try:
        output = Output(first)
        await ready(first, output)
        others = [await target.join(first, worker=i % 2) for i in range(1, viewers)]
        await asyncio.sleep(1)  # every viewer has joined before the output starts
        await first.write(f"seq 1 {sizes.fanout_lines}\r".encode())
        size = len(seq_stream(sizes.fanout_lines))
        gathered = await asyncio.gather(
            _collect(first, output.tail, size),
            *(_collect(other, b"", size) for other in others),
            return_exceptions=True,
        )
    finally:
        await asyncio.gather(*(shell.close() for shell in [first, *others]), return_exceptions=True)
    results = [item for item in gathered if not isinstance(item, BaseException)]
    failed = [item for item in gathered if isinstance(item, BaseException)]
    if any(not isinstance(error, MissedBytes) for error in failed):
        raise next(error for error in failed if not isinstance(error, MissedBytes))
    wrong = [digest for digest, _ in results if digest != expected]
    if wrong:
        raise AssertionError(f"{target.name}: {len(wrong)} of {viewers} viewers got other bytes")
    if not results:
        raise AssertionError(f"{target.name}: every one of {viewers} viewers missed bytes")
    return statistics.median(rate for _, rate in results), len(results)


SEQ_START = b"1\r\n2\r\n"


async def _collect(shell: Shell, already: bytes, size: int) -> tuple[str, float]:
    """The digest of the ``size`` bytes of `seq` output a viewer gets, and its MiB/s."""
    started = time.perf_counter()
    pending = already
    while SEQ_START not in pending:  # what came before (the prompt, the ready line) is skipped
        pending += await shell.read()
    piece = pending[pending.index(SEQ_START) :][:size]
    digest = hashlib.sha256(piece)
    got = len(piece)
    while got < size:
        piece = (await shell.read())[: size - got]
        digest.update(piece)
        got += len(piece)
    return digest.hexdigest(), size / MIB / (time.perf_counter() - started)


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def raise_fd_limit() -> None:
    """1,000 sessions need more descriptors than the usual soft limit of 1,024."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    os.environ.setdefault("WRENN_BENCH_FDS", str(hard))
