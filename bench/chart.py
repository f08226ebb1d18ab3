"""The report as a chart (PNG, matplotlib's Agg backend, no display needed).

Top: req/s of every throughput figure, Warrant beside its baseline measured in the same run and,
where there is one, the peer (oidc-provider). Bottom left: p50 and p99 latency of every load run
(log scale). Bottom right: the one-at-a-time timings (cold exchange, start to ready): median and
p90.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure as Canvas
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from bench.cpustat import NOISY_PCT
from bench.report import RESULTS_DIR, Figure, Report, quantity

__all__ = ["ThroughputGroup", "throughput_groups", "write_chart"]

COLORS = {"Warrant": "#1f77b4", "baseline": "#b0b0b0", "peer": "#ff7f0e"}
LATENCY_COLORS = ("#1f77b4", "#d62728")
VERDICT_COLORS = {"PASS": "#c7e9c0", "MISS": "#fdd0a2", "ERROR": "#fcbba1"}
BAR_WIDTH = 0.27
DPI = 110


@dataclass(frozen=True, slots=True)
class ThroughputGroup:
    """One cluster of bars: Warrant's rate and what it was divided by."""

    name: str
    warrant: float
    baseline: float | None
    baseline_label: str
    peer: float | None
    peer_label: str


def throughput_groups(figures: Sequence[Figure]) -> list[ThroughputGroup]:
    """The req/s figures by chart group, in report order."""
    order: list[str] = []
    members: dict[str, list[Figure]] = {}
    for figure in figures:
        if figure.upper_bound or figure.unit != "req/s":
            continue
        if figure.chart_group not in members:
            order.append(figure.chart_group)
        members.setdefault(figure.chart_group, []).append(figure)
    return [_group(name, members[name]) for name in order]


def _group(name: str, figures: Sequence[Figure]) -> ThroughputGroup:
    own = next((f for f in figures if not f.peer), None)
    peer = next((f for f in figures if f.peer), None)
    return ThroughputGroup(
        name=name,
        warrant=figures[0].measured,
        baseline=own.baseline if own else None,
        baseline_label=own.baseline_label if own else "",
        peer=peer.baseline if peer else None,
        peer_label=peer.baseline_label if peer else "",
    )


def write_chart(report: Report, path: Path = RESULTS_DIR / "latest.png") -> Path:
    canvas = Canvas(figsize=(15, 13), layout="constrained")
    FigureCanvasAgg(canvas)
    grid = canvas.add_gridspec(3, 2, height_ratios=(1.0, 1.25, 0.45))
    _throughput(canvas.add_subplot(grid[0, :]), throughput_groups(report.figures))
    _load_latency(canvas.add_subplot(grid[1, 0]), report)
    _timings(canvas.add_subplot(grid[1, 1]), report)
    _bounds(canvas.add_subplot(grid[2, :]), [f for f in report.figures if f.upper_bound])
    canvas.suptitle(f"Warrant benchmarks, {report.date} ({report.machine.get('pinning', '')})")
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.savefig(path, dpi=DPI)
    return path


def _throughput(axes: Axes, groups: Sequence[ThroughputGroup]) -> None:
    axes.set_title("Throughput: Warrant, its baseline in the same run, and the peer")
    axes.set_ylabel("requests per second")
    if not groups:
        _empty(axes, "no throughput figure in this run")
        return
    peer_label = next((g.peer_label for g in groups if g.peer_label), "")
    names = {
        "Warrant": "Warrant",
        "baseline": "baseline (same run)",
        "peer": f"peer ({peer_label})" if peer_label else "peer",
    }
    for series, bars in _bar_positions(groups).items():
        if bars:
            drawn = axes.bar(
                [x for x, _ in bars],
                [value for _, value in bars],
                BAR_WIDTH,
                label=names[series],
                color=COLORS[series],
            )
            axes.bar_label(drawn, [f"{value:,.0f}" for _, value in bars], fontsize=7, padding=2)
    axes.set_xticks(
        range(len(groups)),
        [f"{g.name}\nvs {g.baseline_label}" if g.baseline_label else g.name for g in groups],
    )
    axes.margins(y=0.2)
    axes.legend(loc="upper center", ncols=len(COLORS))


def _bar_positions(groups: Sequence[ThroughputGroup]) -> dict[str, list[tuple[float, float]]]:
    """Per series, its bars as (x, value): each group's bars centred on its tick."""
    series: dict[str, list[tuple[float, float]]] = {name: [] for name in COLORS}
    for tick, group in enumerate(groups):
        bars = [
            (name, value)
            for name, value in (
                ("Warrant", group.warrant),
                ("baseline", group.baseline),
                ("peer", group.peer),
            )
            if value is not None
        ]
        for slot, (name, value) in enumerate(bars):
            series[name].append((tick + (slot - (len(bars) - 1) / 2) * BAR_WIDTH, value))
    return series


def _load_latency(axes: Axes, report: Report) -> None:
    axes.set_title("Latency of each load run")
    runs = list(report.runs)
    if not runs:
        _empty(axes, "no load run in this run")
        return
    _paired(
        axes,
        [r.name for r in runs],
        ("p50", [r.p50_ms for r in runs]),
        ("p99", [r.p99_ms for r in runs]),
    )


def _timings(axes: Axes, report: Report) -> None:
    axes.set_title("Timed one at a time (cold exchange, start to ready)")
    runs = list(report.latencies)
    if not runs:
        _empty(axes, "no one-at-a-time timing in this run")
        return
    _paired(
        axes,
        [r.name for r in runs],
        ("median", [r.median_ms for r in runs]),
        ("p90", [r.p90_ms for r in runs]),
    )


def _paired(
    axes: Axes, names: Sequence[str], *series: tuple[str, Sequence[float]], height: float = 0.4
) -> None:
    """Horizontal bars, one row per name, one bar per series, on a log scale of ms."""
    rows = range(len(names))
    for shift, (label, values) in enumerate(series):
        offset = (shift - (len(series) - 1) / 2) * height
        axes.barh(
            [row + offset for row in rows],
            values,
            height,
            label=label,
            color=LATENCY_COLORS[shift % len(LATENCY_COLORS)],
        )
    axes.set_yticks(list(rows), names, fontsize=8)
    axes.invert_yaxis()
    axes.set_xscale("log")
    axes.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axes.xaxis.set_minor_formatter(NullFormatter())
    axes.set_xlabel("milliseconds (log scale)")
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.08), ncols=len(series))


def _bounds(axes: Axes, figures: Sequence[Figure]) -> None:
    """The figures with a ceiling (latency, STS calls, memory, start time) as a table."""
    axes.set_axis_off()
    axes.set_title("Figures with a ceiling")
    if not figures:
        axes.text(0.5, 0.5, "none in this run", ha="center", va="center")
        return
    rows = [
        [
            f.name,
            quantity(f.measured, f.unit),
            f"{quantity(f.baseline, f.baseline_unit or f.unit)} ({f.baseline_label})",
            f.detail,
            f"<= {f.target:g} {f.unit}",
            f.verdict + (" (noisy)" if f.others_pct > NOISY_PCT else ""),
        ]
        for f in figures
    ]
    headers = ["figure", "measured", "baseline", "", "target", "result"]
    table = axes.table(cellText=rows, colLabels=headers, loc="center", cellLoc="left")
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    table.auto_set_column_width(list(range(len(headers))))
    for row, figure in enumerate(figures, start=1):
        table[row, len(headers) - 1].set_facecolor(VERDICT_COLORS[figure.verdict])


def _empty(axes: Axes, text: str) -> None:
    axes.text(0.5, 0.5, text, ha="center", va="center", transform=axes.transAxes)
    axes.set_axis_off()
