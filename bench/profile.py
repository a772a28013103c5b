"""``python -m bench.profile``: where daphne and the host agent spend their time, per workload.

Each workload runs for a while on the production topology (the `wrenn` target) while py-spy
samples daphne and the host agent. It reports the CPU time of each process per operation
(from /proc: every thread, Python or not) and, from the samples taken while a thread held the
GIL, the functions the time was spent in (their share of the samples, callees included).
The report goes to bench/results/profile.md. It measures; it asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

from bench.shells import Output, Shell
from bench.targets import WrennProduction
from bench.workloads import (
    MIB,
    bulk_command,
    echo_command,
    keystroke,
    open_ready,
    raise_fd_limit,
    raw_cat,
    ready,
)

RESULTS = Path(__file__).resolve().parent / "results"
WORKLOADS = ("echo", "sessions", "bulk")
RATE = 250  # samples a second
TOP = 18
SELF_TOP = 6

# A workload sets up, calls ``begin()`` (sampling starts), works for ``seconds`` and returns
# how many operations it did and what one is.
Workload = Callable[[WrennProduction, float, Callable[[], None]], Awaitable[tuple[int, str]]]
# Frames every sample sits under: the event loop and the threads' scaffolding.
SCAFFOLDING = re.compile(
    r"^(<module>|Handle\._run|BaseEventLoop\._?run|Thread\.|_worker |_WorkItem\.run"
    r"|Runner\.run|run \(asyncio|_run_module_as_main|_run_code|main \(hostagent|CommandLineInterface"
    r"|Server\.run \(daphne|AsyncioSelectorReactor\.run)"
)


async def echo(target: WrennProduction, seconds: float, begin: Callable[[], None]) -> tuple[int, str]:
    """Single keystrokes into `cat` in raw mode, each sent once the previous one came back."""
    shell = await target.open()
    try:
        output = await raw_cat(shell)
        done = 0
        begin()
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            await keystroke(shell, output, done)
            done += 1
    finally:
        await shell.close()
    return done, "keystroke"


async def sessions(target: WrennProduction, seconds: float, begin: Callable[[], None]) -> tuple[int, str]:
    """200 sessions on one worker, each running `echo` commands one after another."""
    opened = await open_ready(target, 200)
    begin()
    deadline = time.perf_counter() + seconds

    async def loop(shell: Shell, output: Output, index: int) -> int:
        done = 0
        while time.perf_counter() < deadline:
            await echo_command(shell, output, b"p%dc%d" % (index, done))
            done += 1
        return done

    try:
        counts = await asyncio.gather(*(loop(s, o, i) for i, (s, o) in enumerate(opened)))
    finally:
        await asyncio.gather(*(shell.close() for shell, _ in opened), return_exceptions=True)
    return sum(counts), "command"


async def bulk(target: WrennProduction, seconds: float, begin: Callable[[], None]) -> tuple[int, str]:
    """The shell prints 16 MiB after 16 MiB, as in the benchmark's bulk workload."""
    shell = await target.open()
    try:
        output = Output(shell)
        await ready(shell, output)
        mib = 0
        begin()
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            await shell.write(bulk_command(16))
            if await output.until(b"BULK-42") < 16 * MIB:
                raise AssertionError("the bulk output came short")
            mib += 16
    finally:
        await shell.close()
    return mib, "MiB"


RUNS: dict[str, Workload] = {"echo": echo, "sessions": sessions, "bulk": bulk}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def shares(raw: Path) -> tuple[int, list[tuple[float, str]], list[tuple[float, str]]]:
    """py-spy's raw output: the number of samples; each function's share of them, callees
    included (the scaffolding every sample sits under left out); and the functions the samples
    were in themselves, without their callees."""
    total = 0
    within: Counter[str] = Counter()
    itself: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        total += int(count)
        frames = [re.sub(r":\d+\)$", ")", frame) for frame in stack.split(";")]
        itself[frames[-1]] += int(count)
        for frame in set(frames):
            within[frame] += int(count)
    ranked = [(n / total, frame) for frame, n in within.most_common() if not SCAFFOLDING.match(frame)]
    return total, ranked[:TOP], [(n / total, frame) for frame, n in itself.most_common(SELF_TOP)]


async def profile(name: str, seconds: float, out: Path) -> list[str]:
    target = WrennProduction()
    target.start()
    try:
        pids = target.server_pids()
        records = {process: out / f"{name}-{process}.txt" for process in pids}
        samplers: list[subprocess.Popen[bytes]] = []
        before: dict[str, float] = {}
        started = 0.0

        def begin() -> None:
            nonlocal started
            before.update({process: cpu_seconds(pid) for process, pid in pids.items()})
            samplers.extend(
                subprocess.Popen(
                    [
                        *("py-spy", "record", "--pid", str(pid), "--duration", str(int(seconds))),
                        *("--rate", str(RATE), "--gil", "--format", "raw", "--output", str(records[process])),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                )
                for process, pid in pids.items()
            )
            started = time.perf_counter()

        done, unit = await RUNS[name](target, seconds, begin)
        elapsed = time.perf_counter() - started
        after = {process: cpu_seconds(pid) for process, pid in pids.items()}
        for sampler in samplers:
            _, error = sampler.communicate(timeout=seconds + 60)
            if sampler.returncode != 0:
                raise RuntimeError(f"py-spy failed: {error.decode(errors='replace')}")
    finally:
        target.stop()
    lines = [
        f"## {name}: {RUNS[name].__doc__}",
        "",
        f"{done:,} × {unit} in {elapsed:.1f} s ({done / elapsed:,.0f} a second).",
        "",
        "| process | CPU (all threads) | per " + unit + " |",
        "|---|---|---|",
    ]
    for process in pids:
        used = after[process] - before[process]
        lines.append(f"| {process} | {100 * used / elapsed:.0f}% of a core | {1e6 * used / done:,.0f} µs |")
    for process, record in records.items():
        total, ranked, leaves = shares(record)
        lines += [
            "",
            f"{process}: {total:,} samples with the GIL held ({total / RATE / elapsed:.0%} of the time); "
            "the functions they were in, callees included:",
            "",
            "| share | function |",
            "|---|---|",
        ]
        lines += [f"| {share:.1%} | `{frame}` |" for share, frame in ranked]
        lines += [
            "",
            f"{process}: the functions the samples were in themselves (`Handle._run` itself is C code "
            "the event loop calls, mostly gRPC's):",
            "",
            "| share | function |",
            "|---|---|",
        ]
        lines += [f"| {share:.1%} | `{frame}` |" for share, frame in leaves]
    lines.append("")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument(
        "--workloads", default=",".join(WORKLOADS), help="comma-separated: " + ", ".join(WORKLOADS)
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="how long each workload is sampled")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where profile.md is written")
    args = parser.parse_args()
    names = [name for name in args.workloads.split(",") if name]
    unknown = [name for name in names if name not in RUNS]
    if unknown:
        parser.error(f"unknown workloads: {', '.join(unknown)}")
    if shutil.which("py-spy") is None:
        sys.exit("py-spy is not on PATH: `make profile` installs it into the project venv")
    raise_fd_limit()
    args.out.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Where the time goes",
        "",
        "`make profile` (bench/profile.py): the production topology, one workload at a time, "
        f"{args.seconds:g} s each, sampled by py-spy at {RATE} Hz.",
        "",
    ]
    with tempfile.TemporaryDirectory(prefix="wrenn-profile-") as scratch:
        for name in names:
            lines += asyncio.run(profile(name, args.seconds, Path(scratch)))
    report = "\n".join(lines)
    (args.out / "profile.md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
