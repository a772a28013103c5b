"""The ratio table (Markdown) and chart (PNG) of one benchmark run, against the targets in GOALS."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

THIS = "wrenn"


@dataclass(frozen=True)
class Goal:
    figure: str
    label: str
    unit: str
    # The ratio this project's figure must reach against `against` ("terminado", "floor",
    # or a figure of its own), and in which direction.
    against: str
    ratio: float
    at_least: bool
    # The target whose figure it is: this project, or one of its variants (wrenn-bwrap).
    of: str = THIS

    def figures(self, medians: dict[str, dict[str, float]]) -> tuple[float | None, float | None]:
        """This project's figure and the one it is compared with."""
        mine = medians.get(self.of, {}).get(self.figure)
        if self.against in medians:
            other = medians[self.against].get(self.figure)
        else:
            other = medians.get(self.of, {}).get(self.against)
        return mine, other

    def ratio_of(self, medians: dict[str, dict[str, float]]) -> float | None:
        mine, other = self.figures(medians)
        if mine is None or not other:
            return None
        return mine / other

    def met(self, ratio: float | None) -> bool | None:
        if ratio is None:
            return None
        return ratio >= self.ratio if self.at_least else ratio <= self.ratio

    @property
    def against_label(self) -> str:
        return "a lone viewer" if self.against == "fanout_lone_mib_s" else self.against

    @property
    def wanted(self) -> str:
        sign = "≥" if self.at_least else "≤"
        return f"{sign} {self.ratio:g} × {self.against_label}"


GOALS = [
    Goal("bulk_mib_s", "bulk output", "MiB/s", "terminado", 1.2, True),
    Goal("bulk_mib_s", "bulk output", "MiB/s", "floor", 0.75, True),
    Goal("echo_p50_ms", "echo latency p50", "ms", "terminado", 1.5, False),
    Goal("echo_p99_ms", "echo latency p99", "ms", "terminado", 0.5, False),
    Goal("sessions200_cmds_s", "200 sessions: commands/s", "/s", "terminado", 1.0, True),
    Goal("sessions200_p99_ms", "200 sessions: p99 round trip", "ms", "terminado", 1.0, False),
    Goal("prompt_p50_ms", "time to prompt p50", "ms", "terminado", 1.5, False),
    # The same on the bubblewrap runtime: what time to prompt was before capsules were containers.
    Goal("prompt_p50_ms", "time to prompt p50", "ms", "terminado", 1.5, False, of="wrenn-bwrap"),
    Goal("fanout_viewer_mib_s", "fan-out: per viewer of 10", "MiB/s", "fanout_lone_mib_s", 0.5, True),
]
# Whose figure names the runtime in its label: the ones measured on more than one.
BY_RUNTIME = {"prompt_p50_ms"}
# The capsule workload (bench/capsules.py), on each runtime's host agent alone: no goals, the
# runtimes side by side. The first runtime is the one capsules had before (bwrap).
AGENTS = ("agent-bwrap", "agent-oci")
CAPSULE_FIGURES = [
    ("capsule_create_p50_ms", "CreateSandbox p50", "ms"),
    ("capsule_create_p99_ms", "CreateSandbox p99", "ms"),
    ("capsule_destroy_p50_ms", "DestroySandbox p50", "ms"),
    ("capsule_destroy_p99_ms", "DestroySandbox p99", "ms"),
    ("capsule_pss_kib", "idle capsule: its processes, PSS", "KiB"),
    ("capsule_rss_kib", "idle capsule: its processes, RSS", "KiB"),
    ("capsule_cgroup_kib", "idle capsule: its memory cgroup", "KiB"),
    ("capsule_agent_kib", "idle capsule: host agent growth", "KiB"),
    ("capsule_kernel_kib", "idle capsule: host kernel memory", "KiB"),
    ("terminal_start_p50_ms", "terminal start to first byte (gRPC) p50", "ms"),
    ("terminal_pss_kib", "idle terminal: its processes, PSS", "KiB"),
    ("terminal_rss_kib", "idle terminal: its processes, RSS", "KiB"),
]
# Figures with an absolute target rather than a ratio.
IDLE_KIB_TARGET = 150.0


def _cell(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def label(goal: Goal, runtimes: dict[str, str]) -> str:
    """The goal's label, with the host agent runtime that gave the figure where that varies."""
    if goal.figure in BY_RUNTIME and goal.of in runtimes:
        return f"{goal.label}, {runtimes[goal.of]} runtime"
    return goal.label if goal.of == THIS else f"{goal.label} ({goal.of})"


def markdown(results: dict[str, Any]) -> str:
    medians: dict[str, dict[str, float]] = results["medians"]
    runtimes: dict[str, str] = results.get("runtimes", {})
    machine = results["machine"]
    lines = [
        "# Terminal benchmark",
        "",
        f"Machine: {machine['cpus']} CPUs ({machine['cpu']}), {machine['memory_gib']} GiB, "
        f"Linux {machine['kernel']}, Python {machine['python']}. "
        f"Medians of {results['runs']} runs{' (quick sizes)' if results['quick'] else ''}.",
    ]
    if runtimes:
        chosen = ", ".join(f"{name}: {runtime}" for name, runtime in runtimes.items())
        lines += ["", f"Host agent runtimes: {chosen}."]
    lines += [
        "",
        "## Against the targets",
        "",
        "| figure | wrenn | compared with | its figure | ratio | target | met |",
        "|---|---|---|---|---|---|---|",
    ]
    for goal in GOALS:
        mine, other = goal.figures(medians)
        ratio = goal.ratio_of(medians)
        met = goal.met(ratio)
        lines.append(
            f"| {label(goal, runtimes)} ({goal.unit}) | {_cell(mine)} | {goal.against_label} "
            f"| {_cell(other)} "
            f"| {_cell(ratio)} | {goal.wanted} | {'–' if met is None else 'yes' if met else 'no'} |"
        )
    idle = medians.get(THIS, {}).get("sessions1000_idle_kib")
    idle_met = "–" if idle is None else "yes" if idle <= IDLE_KIB_TARGET else "no"
    lines.append(
        f"| memory per idle session, N = 1,000 (KiB, daphne + host agent) | {_cell(idle, 1)} | – | – | – "
        f"| ≤ {IDLE_KIB_TARGET:g} KiB | {idle_met} |"
    )
    complete = medians.get(THIS, {}).get("fanout_complete_viewers")
    complete_met = "–" if complete is None else "yes" if complete >= 10 else "no"
    lines.append(
        f"| fan-out: viewers of 10 that got every byte | {_cell(complete, 0)} | – | – | – "
        f"| 10 | {complete_met} |"
    )
    answered = medians.get(THIS, {}).get("sessions1000_cmds_s")
    lines.append(
        f"| 1,000 sessions on one worker and one agent (commands/s) | {_cell(answered, 0)} | – | – | – "
        f"| every command answered | {'–' if answered is None else 'yes'} |"
    )
    lines += failed(results)
    lines += capsules(medians, runtimes)
    lines += ["", "## Every figure", ""]
    targets = list(medians)
    figures = sorted({key for values in medians.values() for key in values})
    lines.append("| figure | " + " | ".join(targets) + " |")
    lines.append("|---|" + "---|" * len(targets))
    for key in figures:
        lines.append(f"| {key} | " + " | ".join(_cell(medians[t].get(key)) for t in targets) + " |")
    lines.append("")
    return "\n".join(lines)


def failed(results: dict[str, Any]) -> list[str]:
    """The workloads that failed, in how many runs, and the first error (no figures from them)."""
    failures: dict[str, dict[str, list[str]]] = results.get("failures", {})
    rows = [
        f"| {target} | {workload} | {len(errors)} of {results['runs']} | {_escape(errors[0])} |"
        for target, workloads in failures.items()
        for workload, errors in workloads.items()
    ]
    if not rows:
        return []
    return [
        "",
        "## Workloads that failed",
        "",
        "| target | workload | runs | first error |",
        "|---|---|---|---|",
        *rows,
    ]


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def capsules(medians: dict[str, dict[str, float]], runtimes: dict[str, str]) -> list[str]:
    """The capsule workload's table: each runtime's figures, and the last's ratio to the first."""
    agents = [name for name in AGENTS if name in medians]
    if not agents:
        return []
    names = [runtimes.get(name) or name for name in agents]
    columns = [
        f"{name} (before)" if agent == AGENTS[0] else name for name, agent in zip(names, agents, strict=True)
    ]
    ratio = f" | {names[-1]} ÷ {names[0]} |" if len(agents) == 2 else " |"
    lines = [
        "",
        "## Capsules on one host agent (over gRPC)",
        "",
        "| figure | " + " | ".join(columns) + ratio,
        "|---|" + "---|" * (len(agents) + (len(agents) == 2)),
    ]
    for key, text, unit in CAPSULE_FIGURES:
        values = [medians[name].get(key) for name in agents]
        row = f"| {text} ({unit}) | " + " | ".join(_cell(value, 1) for value in values) + " |"
        if len(agents) == 2:
            before, after = values
            # No ratio to a figure at or below zero (a bwrap capsule has no processes).
            ratio_value = after / before if before is not None and before > 0 and after is not None else None
            row += f" {_cell(ratio_value)} |"
        lines.append(row)
    return lines


def chart(results: dict[str, Any], path: Path) -> None:
    """Each goal's ratio as a bar, its target as a mark; green where met."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    medians = results["medians"]
    rows: list[tuple[Goal, float]] = []
    for goal in GOALS:
        ratio = goal.ratio_of(medians)
        if ratio is not None:
            rows.append((goal, ratio))
    if not rows:  # no `wrenn` figures in this run (only other targets were measured)
        return
    figure, axes = plt.subplots(figsize=(9, 0.5 * len(rows) + 1.5))
    runtimes = results.get("runtimes", {})
    labels = [f"{label(goal, runtimes)} vs {goal.against_label}" for goal, _ in rows]
    ratios = [ratio for _, ratio in rows]
    colours = ["tab:green" if goal.met(ratio) else "tab:red" for goal, ratio in rows]
    positions = range(len(rows))
    axes.barh(list(positions), ratios, color=colours)
    marks = [goal.ratio for goal, _ in rows]
    axes.scatter(marks, list(positions), marker="|", s=400, color="black", zorder=3)
    axes.set_yticks(list(positions), labels)
    axes.invert_yaxis()
    axes.set_xscale("log")  # ratios of 0.1 and 10 are as far from 1
    axes.xaxis.set_minor_formatter(NullFormatter())  # the minor labels overlap
    axes.set_xlabel("wrenn ÷ compared figure (black mark: target)")
    cpus, runs = results["machine"]["cpus"], results["runs"]
    axes.set_title(f"Terminal benchmark, {cpus} CPUs, medians of {runs} runs")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
