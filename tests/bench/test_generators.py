"""The load generators' side of the benchmarks, without servers: the rotating wrk script, the
reports of the open-loop and gRPC generators read back into LoadResults, the open-loop request
and response framing, and the nearest-rank percentile every generator ranks latencies with."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import Any

import grpc
import pytest

from bench import grpcload, openloop, soak_load
from bench.errors import BenchError
from bench.loadgen import (
    ROTATION_DONE,
    GrpcCall,
    HttpRequest,
    lua_rotating_script,
    parse_grpc_load_output,
    parse_open_loop_output,
    parse_wrk_output,
)
from bench.openloop import ProtocolError, Target, _response

Percentile = Callable[[Sequence[float], float], float]
PERCENTILES: dict[str, Percentile] = {"openloop": openloop.percentile}

# What wrk 4.1 prints for a one-minute run: the duration and a percentile in minutes.
WRK_MINUTE = """Running 1m test @ http://127.0.0.1:8000/
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    12.00ms   40.00ms   1.50m    99.00%
    Req/Sec     5.00k   200.00     5.50k    70.00%
  Latency Distribution
     50%    2.50ms
     75%    3.00ms
     90%  500.00us
     99%    1.50m
  300123 requests in 1.00m, 40.00MB read
Requests/sec:   5001.93
Transfer/sec:    682.67KB
"""

LUA_LITERAL = r'"(?:[^"\\]|\\.)*"'


def _lua_literals(script: str) -> list[str]:
    """Every double-quoted Lua string literal in `script`, still escaped."""
    return re.findall(LUA_LITERAL, script)


def _lua_value(literal: str) -> str:
    """The text a literal made of printable ASCII and decimal escapes stands for."""
    return re.sub(r"\\(\d{3})", lambda m: chr(int(m[1])), literal[1:-1])


# wrk's report.


def test_wrk_minutes_are_read_as_minutes() -> None:
    """A one-minute run lasts 60 s and a 1.50m percentile is 90,000 ms; microseconds too."""
    result = parse_wrk_output("soak", HttpRequest("http://127.0.0.1:8000/"), 64, WRK_MINUTE)
    assert result.seconds == pytest.approx(60.0)
    assert result.requests == 300_123
    assert result.p50_ms == pytest.approx(2.5)
    assert result.p90_ms == pytest.approx(0.5)
    assert result.p99_ms == pytest.approx(90_000.0)
    assert result.connections == 64
    assert result.errors == 0


def test_wrk_report_without_a_rate_is_refused() -> None:
    """No Requests/sec line (wrk died mid-report) is a BenchError, not a zero rate."""
    broken = WRK_MINUTE.replace("Requests/sec:   5001.93\n", "")
    with pytest.raises(BenchError, match="cannot read wrk's report for soak"):
        parse_wrk_output("soak", HttpRequest("http://127.0.0.1:8000/"), 64, broken)


# The rotating wrk script.


def test_rotating_script_escapes_every_value_it_embeds() -> None:
    """Method, body, static headers and the rotated header's name appear only as escaped
    literals, so a quote, backslash or newline in them cannot end a Lua string early."""
    request = HttpRequest(
        "http://127.0.0.1:8000/v1/tokens",
        method="POST",
        body='{"a": "x\\y"}\nend; os.exit(1) --',
        headers={'X-"Quoted"': "back\\slash", "Content-Type": "application/json"},
    )
    script = lua_rotating_script(request, 'Author"ization\n')
    literals = [_lua_value(literal) for literal in _lua_literals(script)]
    assert '{"a": "x\\y"}\nend; os.exit(1) --' in literals
    assert 'X-"Quoted"' in literals
    assert "back\\slash" in literals
    assert 'Author"ization\n' in literals
    assert "POST" in literals
    assert "os.exit" not in re.sub(LUA_LITERAL, '""', script)  # only inside a literal
    assert all(32 <= ord(char) < 127 for char in script.replace("\n", ""))


def test_rotating_script_cycles_values_and_announces_the_end() -> None:
    """The script picks value (sent - 1) mod n + 1 as the header, sends no body for a GET, and
    prints ROTATION_DONE (which the harness watches for) once n answers are in."""
    script = lua_rotating_script(
        HttpRequest("http://127.0.0.1:8001/v1/credentials"), "Authorization"
    )
    assert 'headers["Authorization"] = values[((sent - 1) % #values) + 1]' in script
    assert 'return wrk.format("GET", nil, headers, nil)' in script
    assert "local headers = {}" in script
    assert f'io.stdout:write("{ROTATION_DONE}\\n")' in script
    assert "if answered == #values then" in script


# The open-loop generator's report.


def _open_loop_report(**overrides: Any) -> dict[str, Any]:
    """A report with exactly the keys `bench.openloop.generate` returns."""
    report: dict[str, Any] = {
        "rate": 2000.0,
        "connections": 32,
        "seconds": 10.0,
        "completed": 19_987,
        "rps": 1998.7,
        "p50_ms": 1.25,
        "p90_ms": 2.5,
        "p99_ms": 7.75,
        "max_ms": 41.0,
        "bad_status": 3,
        "socket_errors": {"connect": 0, "read": 1, "write": 0, "timeout": 2},
        "queued": 12,
        "send_lag_p99_ms": 0.08,
        "send_lag_max_ms": 1.9,
        "cpu_seconds": 4.2,
        "busy_pct": 41.5,
    }
    report.update(overrides)
    return report


def test_open_loop_report_becomes_a_load_result() -> None:
    """Every figure of the generator's JSON lands in its field, the offered rate is kept apart
    from the completed one, and the generator's own health goes into `generator`."""
    request = HttpRequest("http://127.0.0.1:8001/v1/credentials", headers={"Authorization": "t"})
    result = parse_open_loop_output("vend @ 2000", request, json.dumps(_open_loop_report()))
    assert result.name == "vend @ 2000"
    assert result.request == "GET http://127.0.0.1:8001/v1/credentials"
    assert (result.connections, result.seconds, result.requests) == (32, 10.0, 19_987)
    assert result.requests_per_second == 1998.7
    assert result.offered_rps == 2000.0
    assert (result.p50_ms, result.p90_ms, result.p99_ms) == (1.25, 2.5, 7.75)
    assert result.bad_status == 3
    assert dict(result.socket_errors) == {"connect": 0, "read": 1, "write": 0, "timeout": 2}
    assert result.errors == 6
    assert result.error_summary() == "3 status>399, read 1, timeout 2"
    assert result.generator == {
        "max_ms": 41.0,
        "queued": 12.0,
        "send_lag_p99_ms": 0.08,
        "send_lag_max_ms": 1.9,
        "cpu_seconds": 4.2,
        "busy_pct": 41.5,
    }


@pytest.mark.parametrize(
    "output",
    [
        "",  # the generator printed nothing
        "error: connection refused",
        "[]",
        "null",
        json.dumps({k: v for k, v in _open_loop_report().items() if k != "p99_ms"}),
        json.dumps(_open_loop_report(socket_errors=[1, 2])),
        json.dumps(_open_loop_report(completed="many")),
    ],
)
def test_an_unreadable_open_loop_report_is_a_bench_error(output: str) -> None:
    """Anything but a complete report raises BenchError naming the run and quoting the output."""
    with pytest.raises(BenchError, match="cannot read the open-loop report for half") as caught:
        parse_open_loop_output("half", HttpRequest("http://127.0.0.1:1/"), output)
    assert output in str(caught.value)


# The gRPC generator's report, made by the generator's own tally and report code.


def _grpc_plan() -> grpcload.Plan:
    return grpcload.Plan(
        target="127.0.0.1:50051",
        method=grpcload.GET_CREDENTIALS,
        request=b"",
        metadata=(("authorization", "Bearer t"),),
        seconds=2.0,
        warmup=1.0,
        concurrency=16,
        channels=4,
        timeout=2.0,
    )


def _grpc_output() -> str:
    """What `python -m bench.grpcload` prints for a window [100, 102] with four answers, three
    failures and two calls outside the window."""
    tally = grpcload._Tally(measure_from=100.0, measure_until=102.0)
    for started, done in ((100.0, 100.004), (100.5, 100.502), (101.0, 101.008), (101.5, 101.51)):
        tally.record(started, done, grpc.StatusCode.OK)
    tally.record(100.1, 100.3, grpc.StatusCode.DEADLINE_EXCEEDED)
    tally.record(100.2, 100.4, grpc.StatusCode.DEADLINE_EXCEEDED)
    tally.record(100.3, 100.31, grpc.StatusCode.UNAVAILABLE)
    tally.record(99.0, 99.5, grpc.StatusCode.OK)  # during the warm-up
    tally.record(101.9, 102.5, grpc.StatusCode.INTERNAL)  # after the window
    tally.cpu_at_start, tally.cpu_at_end = 3.0, 3.5
    return json.dumps(grpcload._report(_grpc_plan(), tally))


def test_grpc_report_becomes_a_load_result() -> None:
    """Requests, rate, percentiles and errors by status code come through from the generator's
    own report; only calls finishing inside the window count."""
    call = GrpcCall("127.0.0.1:50051", grpcload.GET_CREDENTIALS, "Bearer t")
    result = parse_grpc_load_output("grpc vend", call, _grpc_output())
    assert result.request == "gRPC GetCredentials 127.0.0.1:50051"
    assert result.connections == 16
    assert result.seconds == 2.0
    assert result.requests == 4
    assert result.requests_per_second == 2.0
    assert result.p50_ms == pytest.approx(4.0)  # ranks 2 of 2, 4, 8, 10 ms
    assert result.p90_ms == pytest.approx(10.0)
    assert result.p99_ms == pytest.approx(10.0)
    assert result.bad_status == 0
    assert dict(result.socket_errors) == {"DEADLINE_EXCEEDED": 2, "UNAVAILABLE": 1}
    assert result.errors == 3
    assert result.error_summary() == "DEADLINE_EXCEEDED 2, UNAVAILABLE 1"
    assert result.generator is not None
    assert result.generator["concurrency"] == 16.0
    assert result.generator["channels"] == 4.0
    assert result.generator["max_ms"] == pytest.approx(10.0)
    assert result.generator["cpu_seconds"] == 0.5
    assert result.generator["busy_pct"] == 25.0
    assert result.offered_rps is None


@pytest.mark.parametrize("output", ["", "{}", '{"errors": {}}', "[1]"])
def test_an_unreadable_grpc_report_is_a_bench_error(output: str) -> None:
    """An empty or partial gRPC report raises BenchError naming the run."""
    call = GrpcCall("127.0.0.1:50051", grpcload.GET_CREDENTIALS)
    with pytest.raises(BenchError, match="cannot read the gRPC generator's report for g1"):
        parse_grpc_load_output("g1", call, output)


# Open-loop request and response framing.


def test_target_builds_the_request_bytes() -> None:
    """The URL's path and query, a Host header with the port and each extra header, CRLF
    separated and ended by a blank line."""
    target = Target.parse(
        "http://127.0.0.1:8001/v1/credentials?x=1", ["Authorization:  Bearer t ", "X-A:b"]
    )
    assert (target.host, target.port) == ("127.0.0.1", 8001)
    assert target.request == (
        b"GET /v1/credentials?x=1 HTTP/1.1\r\n"
        b"Host: 127.0.0.1:8001\r\n"
        b"Authorization: Bearer t\r\n"
        b"X-A: b\r\n\r\n"
    )


def test_target_defaults_to_port_80_and_root() -> None:
    """Without a port or path the request goes to / on port 80."""
    target = Target.parse("http://localhost", [])
    assert target.port == 80
    assert target.request == b"GET / HTTP/1.1\r\nHost: localhost:80\r\n\r\n"


@pytest.mark.parametrize(
    ("url", "headers", "message"),
    [
        ("https://127.0.0.1/", [], "only http:// URLs"),
        ("http:///path", [], "only http:// URLs"),
        ("http://127.0.0.1/", ["no colon"], "is not 'Name: value'"),
        ("http://127.0.0.1/", [": value"], "is not 'Name: value'"),
    ],
)
def test_target_refuses_what_it_cannot_send(url: str, headers: list[str], message: str) -> None:
    """TLS, a missing host and malformed headers are refused with a ValueError."""
    with pytest.raises(ValueError, match=message):
        Target.parse(url, headers)


def test_response_waits_for_the_whole_head_and_body() -> None:
    """Byte by byte, a response is incomplete until its last body byte arrives."""
    response = b"HTTP/1.1 201 Created\r\nContent-Length: 3\r\nX-Y: z\r\n\r\nabc"
    for cut in range(len(response)):
        assert _response(bytearray(response[:cut])) is None
    assert _response(bytearray(response)) == (201, len(response), False)


def test_response_header_names_and_close_are_case_blind() -> None:
    """CONTENT-LENGTH and Connection: Close are recognised; keep-alive is not a close, and a
    header merely ending in content-length does not count as the length."""
    close = b"HTTP/1.1 404 Not Found\r\nCONTENT-LENGTH:2\r\nConnection: Close\r\n\r\nno"
    assert _response(bytearray(close)) == (404, len(close), True)
    keep = b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n"
    assert _response(bytearray(keep)) == (200, len(keep), False)
    with pytest.raises(ProtocolError):
        _response(bytearray(b"HTTP/1.1 200 OK\r\nX-Content-Length: 0\r\n\r\n"))


def test_response_body_may_contain_a_blank_line() -> None:
    """The length comes from the first head only: a CRLFCRLF inside the body is body."""
    body = b"a\r\n\r\nContent-Length: 99\r\n\r\n"
    response = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    assert _response(bytearray(response + b"HTTP/1.1")) == (200, len(response), False)


# The nearest-rank percentile.


def _nearest_rank(values: Sequence[float], pct: int) -> float:
    """The smallest value with at least pct% of the values at or below it (integers only)."""
    ordered = sorted(values)
    for index, value in enumerate(ordered):
        if (index + 1) * 100 >= pct * len(ordered):
            return value
    raise AssertionError("unreachable: the last value always qualifies")


@pytest.mark.parametrize("name", sorted(PERCENTILES))
def test_percentile_matches_the_definition(name: str) -> None:
    """Every integer percentile of 1..n samples equals the definition's nearest rank (this
    caught p28 of 25 samples ranking the 8th value: 28 / 100 * 25 rounds above 7)."""
    percentile = PERCENTILES[name]
    for n in [*range(1, 41), 99, 100, 200, 1000]:
        values = [float(v) for v in range(1, n + 1)]
        for pct in range(101):
            assert percentile(values, pct) == _nearest_rank(values, pct), (n, pct)


@pytest.mark.parametrize("name", sorted(PERCENTILES))
def test_percentile_edges(name: str) -> None:
    """No samples give 0.0; one sample is both p0 and p100; p0 is the minimum and p100 the
    maximum; repeated values are ranked, not deduplicated."""
    percentile = PERCENTILES[name]
    assert percentile([], 50) == 0.0
    assert percentile([7.5], 0) == percentile([7.5], 100) == 7.5
    assert percentile([1.0, 2.0, 3.0], 0) == 1.0
    assert percentile([1.0, 2.0, 3.0], 100) == 3.0
    assert percentile([1.0, 1.0, 1.0, 9.0], 75) == 1.0
    assert percentile([1.0, 1.0, 1.0, 9.0], 76) == 9.0


def test_every_generator_ranks_with_the_same_percentile() -> None:
    """The HTTP, gRPC and soak generators share one definition (they had three copies)."""
    assert vars(grpcload)["percentile"] is openloop.percentile
    assert vars(soak_load)["percentile"] is openloop.percentile
