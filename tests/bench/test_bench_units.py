"""The benchmarks' own arithmetic and parsing, without servers or wrk: what wrk prints becomes
the right figures, wrk scripts carry any text intact, and a figure's ratio and verdict are what
the README claims. (The generators, tables, chart and soak: the other files here.)"""

from __future__ import annotations

import re

import pytest

from bench.errors import BenchError
from bench.loadgen import HttpRequest, _lua_string, lua_script, parse_wrk_output
from bench.machine import CpuPlan, facts
from bench.report import Figure, Report, quantity, render_markdown, render_text

# What wrk 4.1 prints for `wrk --latency` (units as wrk chooses them).
WRK_OUTPUT = """Running 5s test @ http://127.0.0.1:8000/v1/credentials
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     4.58ms    2.01ms  40.20ms   85.00%
    Req/Sec     6.52k   300.00     7.00k    70.00%
  Latency Distribution
     50%  850.00us
     75%    5.10ms
     90%    6.34ms
     99%    1.02s
  32672 requests in 5.01s, 12.00MB read
  Socket errors: connect 1, read 2, write 3, timeout 4
  Non-2xx or 3xx responses: 7
Requests/sec:   6519.31
Transfer/sec:      2.40MB
"""

REQUEST = HttpRequest("http://127.0.0.1:8000/v1/credentials", headers={"Authorization": "t"})


def test_wrk_output_becomes_a_load_result() -> None:
    """Rate, total, duration and percentiles in wrk's own units (us, ms, s) are read exactly."""
    result = parse_wrk_output("vend", REQUEST, 32, WRK_OUTPUT)
    assert result.requests_per_second == 6519.31
    assert result.requests == 32672
    assert result.seconds == pytest.approx(5.01)
    assert result.p50_ms == pytest.approx(0.85)
    assert result.p90_ms == pytest.approx(6.34)
    assert result.p99_ms == pytest.approx(1020.0)
    assert result.request == "GET http://127.0.0.1:8000/v1/credentials"


def test_wrk_errors_are_counted() -> None:
    """Socket errors by kind and non-2xx/3xx answers all count as errors, and are summarised."""
    result = parse_wrk_output("vend", REQUEST, 32, WRK_OUTPUT)
    assert dict(result.socket_errors) == {"connect": 1, "read": 2, "write": 3, "timeout": 4}
    assert result.bad_status == 7
    assert result.errors == 17
    assert result.error_summary() == "7 status>399, connect 1, read 2, write 3, timeout 4"


def test_a_clean_wrk_run_has_no_errors() -> None:
    """Without the error lines, a run is clean and its summary empty."""
    clean = "\n".join(
        line for line in WRK_OUTPUT.splitlines() if "errors" not in line and "Non-2xx" not in line
    )
    result = parse_wrk_output("vend", REQUEST, 32, clean)
    assert result.errors == 0
    assert result.error_summary() == ""


def test_an_unreadable_wrk_report_is_a_bench_error() -> None:
    """A report missing a percentile fails loudly, quoting what wrk printed."""
    broken = WRK_OUTPUT.replace("     99%    1.02s\n", "")
    with pytest.raises(BenchError, match="cannot read wrk's report for vend"):
        parse_wrk_output("vend", REQUEST, 32, broken)


def _lua_decode(literal: str) -> str:
    """What Lua makes of a double-quoted literal that uses only decimal escapes."""
    assert literal.startswith('"')
    assert literal.endswith('"')
    body = literal[1:-1]
    assert '"' not in body.replace('\\"', "")  # no raw quote can end the literal early
    raw = re.sub(r"\\(\d{3})", lambda m: chr(int(m[1])), body)
    return raw.encode("latin-1").decode("utf-8")


@pytest.mark.parametrize(
    "text",
    ["plain", 'say "hi"', "back\\slash", "line\nbreak\r\t", "é ü 日本", '\\"', "]]--[["],
)
def test_lua_strings_carry_any_text(text: str) -> None:
    """Quotes, backslashes, control and non-ASCII characters round-trip through the literal,
    which holds nothing but printable ASCII."""
    literal = _lua_string(text)
    assert all(32 <= ord(c) < 127 for c in literal)
    assert _lua_decode(literal) == text


def test_lua_script_sets_method_body_and_headers() -> None:
    """The wrk script for a POST sets its method, body and every header."""
    script = lua_script(
        HttpRequest(
            "http://x/v1/tokens",
            method="POST",
            body='{"tenant":"acme"}',
            headers={"Authorization": "Bearer k"},
        )
    )
    assert script.splitlines() == [
        'wrk.method = "POST"',
        'wrk.body = "{\\034tenant\\034:\\034acme\\034}"',
        'wrk.headers["Authorization"] = "Bearer k"',
    ]


def _figure(measured: float, baseline: float, target: float, **extra: object) -> Figure:
    fields: dict[str, object] = {"errors": 0, **extra}
    return Figure(
        name="vend",
        measured=measured,
        baseline=baseline,
        baseline_label="bare GET",
        target=target,
        **fields,  # type: ignore[arg-type]
    )


def test_figure_verdicts() -> None:
    """A ratio at the target passes, just under misses; a ceiling passes at or under; any
    failed request makes the figure an ERROR whatever its rate."""
    assert _figure(900, 1000, 0.9).verdict == "PASS"
    assert _figure(899, 1000, 0.9).verdict == "MISS"
    assert _figure(5.0, 0, 5.0, upper_bound=True, unit="ms").verdict == "PASS"
    assert _figure(5.01, 0, 5.0, upper_bound=True, unit="ms").verdict == "MISS"
    assert _figure(2000, 1000, 0.9, errors=1).verdict == "ERROR"
    assert _figure(1, 0, 0.9).ratio == 0.0  # no baseline: no ratio, not a division error


def test_quantities() -> None:
    """Rates are whole with thousands separators, latencies two decimals, sizes one."""
    assert quantity(31408.4, "req/s") == "31,408 req/s"
    assert quantity(5.744, "ms") == "5.74 ms"
    assert quantity(212.34, "MB") == "212.3 MB"
    assert quantity(1, "STS calls") == "1 STS calls"


def _report() -> Report:
    run = parse_wrk_output("vend", REQUEST, 32, WRK_OUTPUT)
    figures = [
        _figure(8998, 10000, 0.9),
        _figure(4.8, 2684, 5.0, upper_bound=True, unit="ms", baseline_unit="req/s", detail="p50"),
    ]
    return Report(
        date="2026-11-21T18:18:00Z",
        machine=facts("wrk 4.1.0", CpuPlan(server=0, loadgen=1)),
        options={"duration": 5, "warmup": 1, "connections": 32},
        figures=figures,
        runs=[run],
        signs=[],
    )


def test_ratios_are_truncated_not_rounded() -> None:
    """0.8998 against a 0.90 target reads 0.899 and MISS in both renderings, never 0.900."""
    text = render_text(_report())
    assert "0.899" in text
    assert "0.900" not in text
    assert "MISS" in text
    assert "| 0.899 |" in render_markdown(_report())
