"""The benchmark's report (bench/report.py): what its tables say for a given set of results."""

from __future__ import annotations

import os
from typing import Any

from bench import report
from bench.capsules import descendants, smaps_rollup
from bench.targets import agent_runtime


def results(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "machine": {"cpus": 2, "cpu": "test", "memory_gib": 1.0, "kernel": "6", "python": "3.11"},
        "runs": 3,
        "quick": False,
        "runtimes": {"wrenn": "oci", "wrenn-bwrap": "bwrap", "agent-oci": "oci", "agent-bwrap": "bwrap"},
        "failures": {},
        "medians": {
            "terminado": {"prompt_p50_ms": 100.0},
            "wrenn": {"prompt_p50_ms": 60.0},
            "wrenn-bwrap": {"prompt_p50_ms": 40.0},
            "agent-bwrap": {"capsule_create_p50_ms": 2.0, "capsule_pss_kib": 0.0},
            "agent-oci": {"capsule_create_p50_ms": 110.0, "capsule_pss_kib": 200.0},
        },
    }
    return base | overrides


def line_with(markdown: str, text: str) -> str:
    lines = [line for line in markdown.splitlines() if text in line]
    assert len(lines) == 1, f"{text!r} in {len(lines)} lines of:\n{markdown}"
    return lines[0]


def test_time_to_prompt_names_the_runtime_of_each_figure() -> None:
    markdown = report.markdown(results())

    oci = line_with(markdown, "time to prompt p50, oci runtime")
    bwrap = line_with(markdown, "time to prompt p50, bwrap runtime")
    assert "| 60.00 | terminado | 100.00 | 0.60 | ≤ 1.5 × terminado | yes |" in oci
    assert "| 40.00 | terminado | 100.00 | 0.40 |" in bwrap
    assert "Host agent runtimes: wrenn: oci, wrenn-bwrap: bwrap" in markdown


def test_capsule_table_puts_the_runtimes_side_by_side() -> None:
    markdown = report.markdown(results())

    assert "| figure | bwrap (before) | oci | oci ÷ bwrap |" in markdown
    assert line_with(markdown, "CreateSandbox p50").endswith("| 2.0 | 110.0 | 55.00 |")
    # No ratio against a bwrap capsule's 0 KiB of processes.
    assert line_with(markdown, "idle capsule: its processes, PSS").endswith("| 0.0 | 200.0 | – |")


def test_failed_workloads_are_listed_with_their_error() -> None:
    failures = {"wrenn": {"sessions200": ["RuntimeError: 199 of 200 sessions opened; then: quota | x"]}}

    markdown = report.markdown(results(failures=failures))

    row = line_with(markdown, "| wrenn | sessions200 |")
    assert "| 1 of 3 |" in row
    assert "quota \\| x" in row  # a | in the message does not split the cell


def test_without_failures_there_is_no_failure_section() -> None:
    assert "Workloads that failed" not in report.markdown(results())


def test_agent_runtime_is_read_from_the_agents_listening_line() -> None:
    log = "WARNING something\nINFO hostagent.server: hostagent listening on 127.0.0.1:5 (runtime=oci)\n"

    assert agent_runtime(log) == "oci"
    assert agent_runtime("INFO starting\n") == ""


def test_memory_of_a_process_tree_includes_this_process() -> None:
    assert os.getpid() in descendants(os.getpid())
    assert smaps_rollup(os.getpid())["Rss"] > 0
    assert smaps_rollup(2**22 + 1) == {}  # gone (or never there): nothing to count
