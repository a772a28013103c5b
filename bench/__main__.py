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
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

from bench import report
from bench.capsules import capsule_lifecycle
from bench.targets import SHELL_WORKLOADS, TARGETS, HostAgent, Target
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
WORKLOADS = (*SHELL_WORKLOADS, "capsules")
ERROR_LENGTH = 500


async def run_target(
    target: Target, sizes: Sizes, chosen: tuple[str, ...]
) -> tuple[dict[str, float], dict[str, str]]:
    """The workloads of ``chosen`` that ``target`` runs: their figures, and why any failed.

    A workload that fails is recorded with its error and the others still run, so that one
    limit reached (a session count the target cannot hold) does not cost the whole run.
    """
    steps: list[tuple[str, Callable[[], Awaitable[dict[str, float]]]]] = []
    workloads = tuple(name for name in chosen if name in target.workloads)
    if "capsules" in workloads and isinstance(target, HostAgent):
        steps.append(("capsules", partial(capsule_lifecycle, target, sizes)))
    if "echo" in workloads:
        steps.append(("echo", partial(echo_latency, target, sizes)))
    if "bulk" in workloads:
        steps.append(("bulk", partial(bulk_output, target, sizes)))
    if "prompt" in workloads:
        steps.append(("prompt", partial(time_to_prompt, target, sizes)))
    if "fanout" in workloads and target.shares_sessions and target.name == "wrenn":
        steps.append(("fanout", partial(fan_out, target, sizes)))
    if "sessions" in workloads:
        pids = target.server_pids()
        steps += [(f"sessions{n}", partial(many_sessions, target, sizes, n, pids)) for n in sizes.sessions]
    figures: dict[str, float] = {}
    errors: dict[str, str] = {}
    for name, step in steps:
        try:
            figures |= await step()
        except Exception as error:  # recorded in the results, and the run goes on
            log.exception("%s: %s failed", target.name, name)
            errors[name] = f"{type(error).__name__}: {error}"[:ERROR_LENGTH]
    return figures, errors


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
    # The capsule runtime each target's host agent chose (auto picks oci as root).
    runtimes: dict[str, str] = {}
    failures: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    started = time.time()
    for run in range(1, args.runs + 1):
        for name in names:
            target = TARGETS[name]()
            if not set(workloads) & set(target.workloads):
                continue
            log.info("run %d/%d: %s", run, args.runs, name)
            target.start()
            try:
                if target.runtime():
                    runtimes[name] = target.runtime()
                figures, errors = asyncio.run(run_target(target, sizes, workloads))
            finally:
                target.stop()
            for key, value in figures.items():
                samples[name][key].append(value)
            for workload, message in errors.items():
                failures[name][workload].append(message)
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
        "runtimes": runtimes,
        # Per target and workload, the error of each run in which it failed.
        "failures": failures,
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
