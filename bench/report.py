"""Figures, and the report of one run: a plain table on stdout, the same as JSON and Markdown."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.cpustat import NOISY_PCT, Interference
from bench.latency import LatencyRun
from bench.loadgen import LoadResult
from bench.sign import SignResult

__all__ = ["Figure", "Report", "quantity", "render_markdown", "render_text", "write"]

RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True, slots=True)
class Figure:
    """One measured rate against its baseline, whose ratio must reach `target`; or, with
    `upper_bound`, a measured quantity (a latency in ms) that must not exceed `target`, shown
    next to its baseline with `detail` in place of the ratio. `errors` counts failures in the
    runs behind it."""

    name: str
    measured: float
    baseline: float
    baseline_label: str
    target: float
    errors: int
    note: str = ""
    others_pct: float = 0.0  # the worst share of a pinned CPU others took in the runs behind it
    unit: str = "req/s"  # of `measured`, and of `baseline` unless `baseline_unit` says otherwise
    baseline_unit: str | None = None
    upper_bound: bool = False
    detail: str = ""
    # The chart draws figures of one group side by side (Warrant's rate once, then each
    # baseline); empty: the figure's own name. `peer` marks a baseline that is another product.
    group: str = ""
    peer: bool = False

    @property
    def chart_group(self) -> str:
        return self.group or self.name

    @property
    def ratio(self) -> float:
        return self.measured / self.baseline if self.baseline > 0 else 0.0

    @property
    def passed(self) -> bool:
        if self.upper_bound:
            return self.measured <= self.target
        return self.ratio >= self.target

    @property
    def verdict(self) -> str:
        """ERROR when any request failed: the figure is then not that of the happy path."""
        if self.errors:
            return "ERROR"
        return "PASS" if self.passed else "MISS"

    def to_json(self) -> dict[str, Any]:
        common = {
            "errors": self.errors,
            "verdict": self.verdict,
            "others_cpu_pct": self.others_pct,
            "note": self.note,
            "group": self.chart_group,
            "peer": self.peer,
        }
        if not self.upper_bound:
            return {
                "name": self.name,
                "measured_rps": round(self.measured, 1),
                "baseline_rps": round(self.baseline, 1),
                "baseline": self.baseline_label,
                "ratio": round(self.ratio, 4),
                "target": self.target,
                **common,
            }
        return {
            "name": self.name,
            "measured": round(self.measured, 3),
            "unit": self.unit,
            "baseline_value": round(self.baseline, 3),
            "baseline_unit": self.baseline_unit or self.unit,
            "baseline": self.baseline_label,
            "detail": self.detail,
            "target_max": self.target,
            **common,
        }


@dataclass(frozen=True, slots=True)
class Report:
    date: str
    machine: Mapping[str, str]
    options: Mapping[str, Any]
    figures: Sequence[Figure]
    runs: Sequence[LoadResult]
    signs: Sequence[SignResult]
    latencies: Sequence[LatencyRun] = ()
    skipped: Sequence[tuple[str, str]] = ()  # (benchmark, why it could not run here)

    @property
    def clean(self) -> bool:
        return all(figure.errors == 0 for figure in self.figures)

    def to_json(self) -> dict[str, Any]:
        return {
            "date": self.date,
            "machine": dict(self.machine),
            "options": dict(self.options),
            "figures": [f.to_json() for f in self.figures],
            "skipped": [{"benchmark": name, "reason": why} for name, why in self.skipped],
            "load_runs": [_load_run_json(r) for r in self.runs],
            "sign_runs": [
                {
                    "name": s.name,
                    "alg": s.alg,
                    "kid": s.kid,
                    "payload_bytes": s.payload_bytes,
                    "signatures": s.signatures,
                    "seconds": round(s.seconds, 3),
                    "rate": round(s.rate, 1),
                    "others_cpu_pct": _interference_json(s.interference),
                }
                for s in self.signs
            ],
            "latency_runs": [
                {
                    "name": r.name,
                    "what": r.what,
                    "samples": r.count,
                    "median_ms": round(r.median_ms, 3),
                    "p90_ms": round(r.p90_ms, 3),
                    "min_ms": round(r.min_ms, 3),
                    "max_ms": round(r.max_ms, 3),
                    "errors": r.errors,
                    "samples_ms": [round(v, 3) for v in r.samples_ms],
                    "others_cpu_pct": _interference_json(r.interference),
                }
                for r in self.latencies
            ],
        }


def _load_run_json(r: LoadResult) -> dict[str, Any]:
    run: dict[str, Any] = {
        "name": r.name,
        "request": r.request,
        "connections": r.connections,
        "seconds": r.seconds,
        "requests": r.requests,
        "rps": r.requests_per_second,
        "p50_ms": r.p50_ms,
        "p90_ms": r.p90_ms,
        "p99_ms": r.p99_ms,
        "status_over_399": r.bad_status,
        "socket_errors": dict(r.socket_errors),
        "others_cpu_pct": _interference_json(r.interference),
    }
    if r.offered_rps is not None:
        run["load_generator"] = "open loop (bench.openloop)"
        run["offered_rps"] = r.offered_rps
    if r.generator is not None:
        run["generator"] = dict(r.generator)
    return run


def _interference_json(noise: Interference | None) -> dict[str, float | None] | None:
    if noise is None:
        return None
    return {"server_cpu": noise.server_cpu_pct, "loadgen_cpu": noise.loadgen_cpu_pct}


def _others(noise: Interference | None) -> str:
    if noise is None:
        return "n/a"
    mark = " !" if noise.worst_pct > NOISY_PCT else ""
    return noise.describe() + mark


def _ratio(ratio: float) -> str:
    """Truncated, not rounded: 0.8998 against a 0.90 target must not read 0.900."""
    return f"{math.floor(ratio * 1000) / 1000:.3f}"


# Decimals shown per unit; other units are counts (STS calls, requests).
_DECIMALS = {"req/s": 0, "ms": 2, "MB": 1}


def quantity(value: float, unit: str) -> str:
    """E.g. '31,408 req/s', '5.74 ms', '212.3 MB', '1 STS calls'."""
    return f"{value:,.{_DECIMALS.get(unit, 0)}f} {unit}"


def _figure_rows(report: Report) -> list[list[str]]:
    return [
        [
            f.name,
            quantity(f.measured, f.unit),
            f"{quantity(f.baseline, f.baseline_unit or f.unit)} ({f.baseline_label})",
            f.detail if f.upper_bound else _ratio(f.ratio),
            f"<= {f.target:g} {f.unit}" if f.upper_bound else f">= {f.target:.2f}",
            f.verdict + (" (noisy)" if f.others_pct > NOISY_PCT else ""),
        ]
        for f in report.figures
    ]


def _run_rows(report: Report) -> list[list[str]]:
    return [
        [
            r.name,
            r.request,
            f"{r.requests_per_second:,.0f}",
            f"{r.p50_ms:.2f}",
            f"{r.p90_ms:.2f}",
            f"{r.p99_ms:.2f}",
            f"{r.requests:,}",
            r.error_summary() or "0",
            _others(r.interference),
        ]
        for r in report.runs
    ]


def _latency_rows(report: Report) -> list[list[str]]:
    return [
        [
            r.name,
            r.what,
            f"{r.count}",
            f"{r.median_ms:.2f}",
            f"{r.p90_ms:.2f}",
            f"{r.min_ms:.2f}",
            f"{r.max_ms:.2f}",
            f"{r.errors}",
            _others(r.interference),
        ]
        for r in report.latencies
    ]


def _sign_rows(report: Report) -> list[list[str]]:
    return [
        [
            s.name,
            s.alg,
            s.kid[:16] + "...",
            f"{s.payload_bytes} B",
            f"{s.signatures:,}",
            f"{s.rate:,.0f}",
            _others(s.interference),
        ]
        for s in report.signs
    ]


FIGURE_HEADERS = ["figure", "measured", "baseline", "ratio", "target", "result"]
RUN_HEADERS = [
    "load run",
    "request",
    "req/s",
    "p50 ms",
    "p90 ms",
    "p99 ms",
    "requests",
    "errors",
    "others %",
]
SIGN_HEADERS = ["sign run", "alg", "kid", "input", "signatures", "sign/s", "others %"]
LATENCY_HEADERS = [
    "latency run",
    "timed",
    "samples",
    "median ms",
    "p90 ms",
    "min ms",
    "max ms",
    "errors",
    "others %",
]


def _notes(report: Report) -> list[str]:
    notes = [f"{name}: SKIPPED, {why}" for name, why in report.skipped]
    notes += [f"{f.name}: {f.note}" for f in report.figures if f.note]
    notes.append(
        "others %: share of the server CPU / wrk CPU used by other processes (or stolen by the "
        f"hypervisor) during the run; '!' marks more than {NOISY_PCT:g}%, where the rate is "
        "not comparable: rerun on a quiet machine"
    )
    if any(r.offered_rps is not None for r in report.runs):
        notes.append(
            "open loop: runs with a fixed offered rate use bench.openloop (wrk2 is not packaged "
            "in Debian): requests due at a fixed rate on keep-alive connections, pinned to the "
            "wrk CPU, each latency counted from the request's due time (no coordinated "
            "omission); req/s is the rate completed"
        )
    if report.latencies:
        notes.append(
            "latency runs: requests timed one at a time by the benchmark process on the wrk "
            "CPU, where the STS stand-in's threads also run; others % counts the benchmark "
            "process (client and stand-in) as ours"
        )
    return notes


def _header_lines(report: Report) -> list[str]:
    m, o = report.machine, report.options
    return [
        f"date     {report.date}",
        f"machine  {m['cpu_count']} CPUs ({m['cpu_model']}), Linux {m['kernel']}, "
        f"Python {m['python']}",
        f"stack    uvicorn {m['uvicorn']}, uvloop {m['uvloop']}, httptools {m['httptools']}, "
        f"starlette {m['starlette']}, cryptography {m['cryptography']}",
        f"load     {m['wrk']}: -t1 -c{o['connections']}, {o['duration']} s measured after "
        f"{o['warmup']} s warm-up; {m['pinning']}",
    ]


def render_text(report: Report) -> str:
    parts = ["\n".join(_header_lines(report)), _text_table(FIGURE_HEADERS, _figure_rows(report))]
    if report.runs:
        parts.append(_text_table(RUN_HEADERS, _run_rows(report)))
    if report.signs:
        parts.append(_text_table(SIGN_HEADERS, _sign_rows(report)))
    if report.latencies:
        parts.append(_text_table(LATENCY_HEADERS, _latency_rows(report)))
    if notes := _notes(report):
        parts.append("\n".join(notes))
    return "\n\n".join(parts) + "\n"


def render_markdown(report: Report) -> str:
    parts = [
        "# Warrant benchmarks",
        "\n".join(
            f"- {line.split(' ', 1)[0]}: {line.split(' ', 1)[1].strip()}"
            for line in _header_lines(report)
        ),
        "## Figures\n\n" + _markdown_table(FIGURE_HEADERS, _figure_rows(report)),
    ]
    if report.runs:
        parts.append("## Load runs\n\n" + _markdown_table(RUN_HEADERS, _run_rows(report)))
    if report.signs:
        parts.append("## Signing\n\n" + _markdown_table(SIGN_HEADERS, _sign_rows(report)))
    if report.latencies:
        parts.append(
            "## Latency runs\n\n" + _markdown_table(LATENCY_HEADERS, _latency_rows(report))
        )
    if notes := _notes(report):
        parts.append("## Notes\n\n" + "\n".join(f"- {note}" for note in notes))
    return "\n\n".join(parts) + "\n"


def write(report: Report, directory: Path = RESULTS_DIR) -> tuple[Path, Path]:
    """`latest.json` and `latest.md` in `directory` (git-ignored)."""
    directory.mkdir(parents=True, exist_ok=True)
    json_path, md_path = directory / "latest.json", directory / "latest.md"
    json_path.write_text(json.dumps(report.to_json(), indent=2) + "\n", encoding="utf-8")
    md_path.write_text(render_markdown(report), encoding="utf-8")
    return json_path, md_path


def _text_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        cells = [cell.ljust(width) for cell, width in zip(cells, widths, strict=True)]
        return "  ".join(cells).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])


def _markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    return "\n".join([line(headers), line(["---"] * len(headers)), *map(line, rows)])
