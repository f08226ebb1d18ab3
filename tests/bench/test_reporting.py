"""The benchmark report's contents, without servers: every figure, baseline, run, skipped
benchmark and noisy CPU shows in the text and Markdown renderings and the JSON, the chart groups
Warrant's rates with their baselines and the peer's, and the CPU interference arithmetic."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import pytest

from bench.chart import ThroughputGroup, _bar_positions, throughput_groups, write_chart
from bench.cpustat import Interference, _others, _Sample
from bench.latency import LatencyRun
from bench.loadgen import LoadResult
from bench.machine import CpuPlan
from bench.report import Figure, Report, render_markdown, render_text, write
from bench.sign import SignResult

MACHINE = {
    "cpu_count": "2",
    "cpu_model": "Test CPU @ 2.0GHz",
    "kernel": "6.1.0-test",
    "python": "3.11.9",
    "wrk": "wrk 4.1.0 [epoll]",
    "uvicorn": "0.54.0",
    "uvloop": "0.23.0",
    "httptools": "0.9.0",
    "starlette": "1.10.0",
    "cryptography": "50.0.2",
    "pinning": CpuPlan(server=0, loadgen=1).describe(),
}
OPTIONS = {"duration": 5, "warmup": 1, "connections": 32}
PEER = "oidc-provider 9.2.0"

VEND = Figure("vend", 8998, 10000, "bare GET", 0.9, errors=0, note="cache hit, fsynced audit")
JWKS = Figure("jwks", 20000, 25000, "bare GET", 0.7, errors=0, others_pct=7.5)
JWKS_PEER = Figure(
    "jwks vs oidc-provider", 20500, 9000, PEER, 1.5, errors=0, group="jwks", peer=True
)
MINT_PEER = Figure(
    "mint RS256 vs oidc-provider", 900, 700, PEER, 1.0, errors=2, group="mint RS256", peer=True
)
VEND_P99 = Figure(
    "vend p99 @ half load",
    4.8,
    2684,
    "offered, open loop",
    5.0,
    errors=0,
    unit="ms",
    baseline_unit="req/s",
    upper_bound=True,
    detail="p50 1.10 ms",
)
STS_CALLS = Figure("STS calls per vend", 1, 1, "one exchange", 1.0, errors=0, unit="STS calls")

WRK_RUN = LoadResult(
    name="vend",
    request="GET http://127.0.0.1:8001/v1/credentials",
    connections=32,
    seconds=5.0,
    requests=44_990,
    requests_per_second=8998.0,
    p50_ms=3.456,
    p90_ms=4.0,
    p99_ms=9.999,
    bad_status=2,
    socket_errors={"connect": 0, "read": 1, "write": 0, "timeout": 0},
    interference=Interference(server_cpu_pct=1.2, loadgen_cpu_pct=7.0),
)
OPEN_LOOP_RUN = LoadResult(
    name="vend @ half",
    request="GET http://127.0.0.1:8001/v1/credentials",
    connections=32,
    seconds=5.0,
    requests=13_420,
    requests_per_second=2684.0,
    p50_ms=1.1,
    p90_ms=2.2,
    p99_ms=4.8,
    bad_status=0,
    socket_errors={"connect": 0, "read": 0, "write": 0, "timeout": 0},
    offered_rps=2684.0,
    generator={"busy_pct": 30.0},
)
SIGN = SignResult("sign", "abcdef0123456789tail", "RS256", 312, 12_000, 2.0)
COLD = LatencyRun("cold exchange", "POST /v1/sandboxes", [10.0, 12.0, 11.0, 30.0], errors=1)


def _report() -> Report:
    return Report(
        date="2026-11-21T18:18:00Z",
        machine=MACHINE,
        options=OPTIONS,
        figures=[VEND, JWKS, JWKS_PEER, MINT_PEER, VEND_P99, STS_CALLS],
        runs=[WRK_RUN, OPEN_LOOP_RUN],
        signs=[SIGN],
        latencies=[COLD],
        skipped=[("peer discovery", "node is not installed")],
    )


def _text_rows(text: str, first_header: str) -> dict[str, list[str]]:
    """The rows of the plain table whose header starts with `first_header`, by first cell."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(first_header + "  "))
    rows: dict[str, list[str]] = {}
    for line in lines[start + 2 :]:
        if not line:
            break
        cells = re.split(r" {2,}", line)
        rows[cells[0]] = cells[1:]
    return rows


def test_text_figure_table_shows_measured_baseline_ratio_and_verdict() -> None:
    """Each figure's row: measured, baseline with its label, truncated ratio or detail, target
    and verdict; a noisy CPU is flagged, an errored figure is ERROR."""
    rows = _text_rows(render_text(_report()), "figure")
    assert rows["vend"] == ["8,998 req/s", "10,000 req/s (bare GET)", "0.899", ">= 0.90", "MISS"]
    assert rows["jwks"] == [
        "20,000 req/s",
        "25,000 req/s (bare GET)",
        "0.800",
        ">= 0.70",
        "PASS (noisy)",
    ]
    assert rows["jwks vs oidc-provider"] == [
        "20,500 req/s",
        f"9,000 req/s ({PEER})",
        "2.277",
        ">= 1.50",
        "PASS",
    ]
    assert rows["mint RS256 vs oidc-provider"][-1] == "ERROR"
    assert rows["vend p99 @ half load"] == [
        "4.80 ms",
        "2,684 req/s (offered, open loop)",
        "p50 1.10 ms",
        "<= 5 ms",
        "PASS",
    ]
    assert rows["STS calls per vend"][:2] == ["1 STS calls", "1 STS calls (one exchange)"]


def test_text_run_tables_show_every_run() -> None:
    """Load runs carry their percentiles, errors and others' CPU share ('!' over 5%); sign and
    latency runs their rate and timings."""
    text = render_text(_report())
    runs = _text_rows(text, "load run")
    assert runs["vend"] == [
        "GET http://127.0.0.1:8001/v1/credentials",
        "8,998",
        "3.46",
        "4.00",
        "10.00",
        "44,990",
        "2 status>399, read 1",
        "1.2/7 !",
    ]
    assert runs["vend @ half"][-2:] == ["0", "n/a"]
    signs = _text_rows(text, "sign run")
    assert signs["sign"] == ["RS256", "abcdef0123456789...", "312 B", "12,000", "6,000", "n/a"]
    latencies = _text_rows(text, "latency run")
    assert latencies["cold exchange"] == [
        "POST /v1/sandboxes",
        "4",
        "11.50",
        "24.60",
        "10.00",
        "30.00",
        "1",
        "n/a",
    ]


def test_text_header_and_notes() -> None:
    """The header names the machine, stack and load; the notes list skipped benchmarks,
    figure notes and explain open-loop and latency runs when there are any."""
    text = render_text(_report())
    assert text.startswith("date     2026-11-21T18:18:00Z\n")
    assert "machine  2 CPUs (Test CPU @ 2.0GHz), Linux 6.1.0-test, Python 3.11.9\n" in text
    assert (
        "load     wrk 4.1.0 [epoll]: -t1 -c32, 5 s measured after 1 s warm-up; "
        "server on CPU 0, wrk on CPU 1\n"
    ) in text
    assert "\npeer discovery: SKIPPED, node is not installed\n" in text
    assert "\nvend: cache hit, fsynced audit\n" in text
    assert "\nopen loop: " in text
    assert "\nlatency runs: " in text


def test_text_without_optional_runs_has_no_empty_tables() -> None:
    """A report of figures alone has no run, sign or latency table nor their notes."""
    report = Report("2026-11-21", MACHINE, OPTIONS, [VEND], runs=[], signs=[])
    text = render_text(report)
    for absent in ("load run", "sign run", "latency run", "open loop:", "SKIPPED"):
        assert absent not in text
    assert _text_rows(text, "figure").keys() == {"vend"}


def test_markdown_has_the_same_rows_and_sections() -> None:
    """Markdown carries the same cells as the text table, a section per table and the notes
    as a list."""
    markdown = render_markdown(_report())
    assert markdown.startswith("# Warrant benchmarks\n\n- date: 2026-11-21T18:18:00Z\n")
    assert "| vend | 8,998 req/s | 10,000 req/s (bare GET) | 0.899 | >= 0.90 | MISS |" in markdown
    assert (
        "| vend p99 @ half load | 4.80 ms | 2,684 req/s (offered, open loop) | p50 1.10 ms "
        "| <= 5 ms | PASS |"
    ) in markdown
    sections = re.findall(r"^## (.+)$", markdown, re.MULTILINE)
    assert sections == ["Figures", "Load runs", "Signing", "Latency runs", "Notes"]
    assert "\n- peer discovery: SKIPPED, node is not installed\n" in markdown


def test_markdown_escapes_pipes_in_cells() -> None:
    """A '|' in a name cannot split a Markdown cell."""
    figure = Figure("p50|p99", 5, 10, "bare|GET", 0.4, errors=0)
    markdown = render_markdown(Report("d", MACHINE, OPTIONS, [figure], runs=[], signs=[]))
    assert "| p50\\|p99 | 5 req/s | 10 req/s (bare\\|GET) | 0.500 | >= 0.40 | PASS |" in markdown


def test_json_of_figures_runs_and_timings(tmp_path: Path) -> None:
    """`write` stores both renderings; the JSON has rate figures with ratios, ceiling figures
    with their units, the open-loop marker, others' CPU shares, sign and latency runs."""
    json_path, md_path = write(_report(), tmp_path)
    assert md_path.read_text(encoding="utf-8") == render_markdown(_report())
    data = json.loads(json_path.read_text(encoding="utf-8"))
    figures = {f["name"]: f for f in data["figures"]}
    assert figures["jwks vs oidc-provider"] == {
        "name": "jwks vs oidc-provider",
        "measured_rps": 20500,
        "baseline_rps": 9000,
        "baseline": PEER,
        "ratio": 2.2778,
        "target": 1.5,
        "errors": 0,
        "verdict": "PASS",
        "others_cpu_pct": 0.0,
        "note": "",
        "group": "jwks",
        "peer": True,
    }
    ceiling = figures["vend p99 @ half load"]
    assert (ceiling["measured"], ceiling["unit"], ceiling["target_max"]) == (4.8, "ms", 5.0)
    assert (ceiling["baseline_value"], ceiling["baseline_unit"]) == (2684, "req/s")
    assert "ratio" not in ceiling
    runs = {r["name"]: r for r in data["load_runs"]}
    assert runs["vend"]["others_cpu_pct"] == {"server_cpu": 1.2, "loadgen_cpu": 7.0}
    assert "offered_rps" not in runs["vend"]
    assert runs["vend @ half"]["offered_rps"] == 2684.0
    assert runs["vend @ half"]["load_generator"] == "open loop (bench.openloop)"
    assert runs["vend @ half"]["generator"] == {"busy_pct": 30.0}
    assert data["sign_runs"][0]["rate"] == 6000.0
    assert data["latency_runs"][0]["p90_ms"] == 24.6
    assert data["skipped"] == [{"benchmark": "peer discovery", "reason": "node is not installed"}]


def test_a_report_is_clean_only_without_errors() -> None:
    """One errored figure makes the whole report unclean."""
    assert not _report().clean
    assert Report("d", MACHINE, OPTIONS, [VEND, JWKS], runs=[], signs=[]).clean


# The chart.


def test_throughput_groups_pair_warrant_with_baseline_and_peer() -> None:
    """Rate figures are grouped by chart group in report order; ceilings and other units are
    left out; a group with only the peer has no own baseline."""
    assert throughput_groups(_report().figures) == [
        ThroughputGroup("vend", 8998, 10000, "bare GET", None, ""),
        ThroughputGroup("jwks", 20000, 25000, "bare GET", 9000, PEER),
        ThroughputGroup("mint RS256", 900, None, "", 700, PEER),
    ]


def test_bars_are_centred_on_their_group() -> None:
    """Two bars sit half a bar either side of the tick, three at -1, 0 and +1 bar widths."""
    positions = {
        series: [(round(x, 6), value) for x, value in bars]
        for series, bars in _bar_positions(throughput_groups(_report().figures)).items()
    }
    assert positions == {
        "Warrant": [(-0.135, 8998), (0.73, 20000), (1.865, 900)],
        "baseline": [(0.135, 10000), (1.0, 25000)],
        "peer": [(1.27, 9000), (2.135, 700)],
    }


def _png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk, after checking the signature."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.mark.parametrize(
    "report",
    [_report(), Report("2026-11-21", MACHINE, OPTIONS, figures=[], runs=[], signs=[])],
    ids=["full", "empty"],
)
def test_write_chart_draws_any_report(report: Report, tmp_path: Path) -> None:
    """A full report (peers, ceilings, timings) and an empty one both give a 15 x 13 inch PNG
    at 110 dpi, in a directory the chart creates."""
    path = write_chart(report, tmp_path / "out" / "chart.png")
    assert path == tmp_path / "out" / "chart.png"
    data = path.read_bytes()
    assert _png_size(data) == (1650, 1430)
    assert len(data) > 10_000


# CPU interference and pinning.


def _sample(busy: int, steal: int) -> _Sample:
    return _Sample(at=0.0, cpus={3: (busy, steal)}, server_ticks=0, loadgen_seconds=0.0)


def test_others_is_busy_minus_ours_plus_steal() -> None:
    """Of 1000 wall ticks, 150 busy of which 100 ours, plus 20 stolen: 7% others."""
    assert _others(3, _sample(1000, 5), _sample(1150, 25), 100, 1000) == 7.0


def test_others_never_goes_negative() -> None:
    """Ours exceeding the CPU's busy ticks (accounting skew) counts as no one else, and only
    the hypervisor's steal remains."""
    assert _others(3, _sample(0, 0), _sample(90, 4), 100, 200) == 2.0
    assert _others(3, _sample(0, 0), _sample(90, 0), 100, 200) == 0.0


def test_interference_worst_and_description() -> None:
    """The worst share is the larger CPU's; without a load generator its share reads '-'."""
    assert Interference(1.5, None).worst_pct == 1.5
    assert Interference(1.5, None).describe() == "1.5/-"
    assert Interference(0.0, 12.25).worst_pct == 12.25
    assert Interference(0.0, 12.25).describe() == "0/12.25"


def test_cpu_plan_describes_pinning() -> None:
    """A plan names both CPUs, or says it could not pin."""
    assert CpuPlan(server=2, loadgen=5).describe() == "server on CPU 2, wrk on CPU 5"
    assert CpuPlan(None, None).describe() == "not pinned (fewer than 2 CPUs available)"
