"""``python -m bench``: every target, every workload, several runs; then the ratio table.

Each run starts each target afresh, runs the workloads on it and stops it; figures are the
medians over the runs. Results go to bench/results/ (latest.json, latest.md, latest.png).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import platform
import signal
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench import report
from bench.targets import TARGETS, Target
from bench.workloads import (
    QUICK,
    Sizes,
    bulk_output,
    echo_latency,
    fan_out,
    many_sessions,
    raise_fd_limit,
    time_to_prompt,
)

log = logging.getLogger("bench")
RESULTS = Path(__file__).resolve().parent / "results"
WORKLOADS = ("echo", "bulk", "sessions", "prompt", "fanout")


async def run_target(target: Target, sizes: Sizes, workloads: tuple[str, ...]) -> dict[str, float]:
    figures: dict[str, float] = {}
    if "echo" in workloads:
        figures |= await echo_latency(target, sizes)
    if "bulk" in workloads:
        figures |= await bulk_output(target, sizes)
    if "prompt" in workloads:
        figures |= await time_to_prompt(target, sizes)
    if "fanout" in workloads and target.shares_sessions and target.name == "wrenn":
        figures |= await fan_out(target, sizes)
    if "sessions" in workloads:
        for count in sizes.sessions:
            figures |= await many_sessions(target, sizes, count, target.server_pids())
    return figures


def machine() -> dict[str, Any]:
    cpus = str(os.cpu_count() or 0)
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    memory = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
    return {
        "cpus": int(cpus),
        "cpu": model,
        "memory_gib": round(int(memory) / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--runs", type=int, default=3, help="runs per target; figures are medians")
    parser.add_argument("--quick", action="store_true", help="smaller workloads, for a first look")
    # wrenn-json (the production topology with JSON frames) only when asked for.
    default_targets = tuple(name for name in TARGETS if name != "wrenn-json")
    for option, choices, default in (
        ("--targets", tuple(TARGETS), default_targets),
        ("--workloads", WORKLOADS, WORKLOADS),
    ):
        parser.add_argument(
            option,
            default=",".join(default),
            help=f"comma-separated: {', '.join(choices)} (default: {','.join(default)})",
        )
    parser.add_argument("--sessions", help="comma-separated session counts (default: 50,200,1000)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where results are written")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    # SIGTERM (a timeout, a supervisor) stops the targets too, like Ctrl-C.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    raise_fd_limit()
    sizes = QUICK if args.quick else Sizes()
    if args.sessions:
        sizes = dataclasses.replace(sizes, sessions=tuple(int(n) for n in args.sessions.split(",")))
    names = [name for name in args.targets.split(",") if name]
    unknown = [name for name in names if name not in TARGETS]
    if unknown:
        parser.error(f"unknown targets: {', '.join(unknown)}")
    workloads = tuple(name for name in args.workloads.split(",") if name)
    samples: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    started = time.time()
    for run in range(1, args.runs + 1):
        for name in names:
            target = TARGETS[name]()
            log.info("run %d/%d: %s", run, args.runs, name)
            target.start()
            try:
                figures = asyncio.run(run_target(target, sizes, workloads))
            finally:
                target.stop()
            for key, value in figures.items():
                samples[name][key].append(value)
            log.info("  %s", {key: round(value, 2) for key, value in figures.items()})
    medians = {
        name: {key: statistics.median(values) for key, values in figures.items()}
        for name, figures in samples.items()
    }
    results = {
        "machine": machine(),
        "runs": args.runs,
        "quick": args.quick,
        "seconds": round(time.time() - started),
        "sizes": sizes.__dict__,
        "medians": medians,
        "samples": samples,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latest.json").write_text(json.dumps(results, indent=2, default=list) + "\n")
    markdown = report.markdown(results)
    (args.out / "latest.md").write_text(markdown)
    report.chart(results, args.out / "latest.png")
    print(markdown)


if __name__ == "__main__":
    main()
