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

    def ratio_of(self, medians: dict[str, dict[str, float]]) -> float | None:
        mine = medians.get(THIS, {}).get(self.figure)
        if self.against in medians:
            other = medians[self.against].get(self.figure)
        else:
            other = medians.get(THIS, {}).get(self.against)
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
    Goal("fanout_viewer_mib_s", "fan-out: per viewer of 10", "MiB/s", "fanout_lone_mib_s", 0.5, True),
]
# Figures with an absolute target rather than a ratio.
IDLE_KIB_TARGET = 150.0


def _cell(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def markdown(results: dict[str, Any]) -> str:
    medians: dict[str, dict[str, float]] = results["medians"]
    machine = results["machine"]
    lines = [
        "# Terminal benchmark",
        "",
        f"Machine: {machine['cpus']} CPUs ({machine['cpu']}), {machine['memory_gib']} GiB, "
        f"Linux {machine['kernel']}, Python {machine['python']}. "
        f"Medians of {results['runs']} runs{' (quick sizes)' if results['quick'] else ''}.",
        "",
        "## Against the targets",
        "",
        "| figure | wrenn | compared with | its figure | ratio | target | met |",
        "|---|---|---|---|---|---|---|",
    ]
    for goal in GOALS:
        mine = medians.get(THIS, {}).get(goal.figure)
        if goal.against in medians:
            other = medians[goal.against].get(goal.figure)
        else:
            other = medians.get(THIS, {}).get(goal.against)
        ratio = goal.ratio_of(medians)
        met = goal.met(ratio)
        lines.append(
            f"| {goal.label} ({goal.unit}) | {_cell(mine)} | {goal.against_label} | {_cell(other)} "
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
    lines += ["", "## Every figure", ""]
    targets = list(medians)
    figures = sorted({key for values in medians.values() for key in values})
    lines.append("| figure | " + " | ".join(targets) + " |")
    lines.append("|---|" + "---|" * len(targets))
    for key in figures:
        lines.append(f"| {key} | " + " | ".join(_cell(medians[t].get(key)) for t in targets) + " |")
    lines.append("")
    return "\n".join(lines)


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
    labels = [f"{goal.label} vs {goal.against_label}" for goal, _ in rows]
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
