"""The load generator: run wrk against one URL for a fixed time and read what it reports.

wrk is not our code, so a slow client can never be mistaken for a slow server. It counts every
response with a status above 399 and every socket error; a run with any of them is not a
measurement of the happy path, and says so. gRPC, which wrk cannot speak, is loaded by
`bench.grpcload` (GrpcLoad), whose errors are counted by status code.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path

from bench.cpustat import Interference
from bench.errors import BenchError
from bench.grpcload import TOKEN_ENV
from bench.machine import child_setup

__all__ = [
    "GrpcCall",
    "GrpcLoad",
    "HttpRequest",
    "LoadResult",
    "OpenLoop",
    "Wrk",
    "WrkMissing",
    "lua_rotating_script",
    "lua_script",
    "parse_grpc_load_output",
    "parse_open_loop_output",
    "parse_wrk_output",
]

INSTALL_HINT = "wrk is not installed; install it with: sudo apt-get install wrk"
# One wrk thread keeps the load generator on its one pinned CPU; the connections give concurrency.
WRK_THREADS = 1
# wrk's per-request timeout: a response slower than this counts as a timeout error, not a sample.
REQUEST_TIMEOUT = timedelta(seconds=2)
# wrk runs for its duration plus connection setup and printing; far beyond that it has hung.
RUN_GRACE = timedelta(seconds=30)
# What a rotating script prints once every value has been answered; wrk is then interrupted
# (SIGINT: it stops, and reports the time actually run).
ROTATION_DONE = "warrant-bench: every value sent"

_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_TIME = r"([\d.]+)(us|ms|s|m|h)"
_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)\s*$", re.MULTILINE)
_TOTAL = re.compile(rf"^\s*(\d+) requests in {_TIME},", re.MULTILINE)
_PERCENTILE = re.compile(rf"^\s*(50|90|99)%\s+{_TIME}\s*$", re.MULTILINE)
_SOCKET_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_BAD_STATUS = re.compile(r"Non-2xx or 3xx responses: (\d+)")


class WrkMissing(BenchError):
    """wrk is not on this machine."""


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """What every connection sends, over and over."""

    url: str
    method: str = "GET"
    body: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    def at(self, url: str) -> HttpRequest:
        """The same request sent to another URL (a baseline server)."""
        return replace(self, url=url)

    def describe(self) -> str:
        return f"{self.method} {self.url}"


@dataclass(frozen=True, slots=True)
class LoadResult:
    name: str
    request: str
    connections: int
    seconds: float
    requests: int
    requests_per_second: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    bad_status: int  # responses with a status above 399
    # connect, read, write, timeout; for a gRPC run, failed calls by status code name
    socket_errors: Mapping[str, int]
    interference: Interference | None = None  # others' use of the pinned CPUs meanwhile
    offered_rps: float | None = None  # the fixed rate of an open-loop run; None for wrk
    generator: Mapping[str, float] | None = None  # the open-loop generator's own health

    @property
    def errors(self) -> int:
        return self.bad_status + sum(self.socket_errors.values())

    def error_summary(self) -> str:
        """Empty when clean, else e.g. '12 status>399, read 3'."""
        parts = [f"{self.bad_status} status>399"] if self.bad_status else []
        parts += [f"{kind} {count}" for kind, count in self.socket_errors.items() if count]
        return ", ".join(parts)


class Wrk:
    def __init__(self, path: str, *, connections: int, cpu: int | None, scratch: Path) -> None:
        self._path = path
        self._connections = connections
        self._cpu = cpu
        self._scratch = scratch

    @classmethod
    def find(cls, *, connections: int, cpu: int | None, scratch: Path) -> Wrk:
        """Raises WrkMissing, whose message says how to install it."""
        path = shutil.which("wrk")
        if path is None:
            raise WrkMissing(INSTALL_HINT)
        return cls(path, connections=connections, cpu=cpu, scratch=scratch)

    @property
    def connections(self) -> int:
        return self._connections

    def version(self) -> str:
        # `wrk -v` prints its version line, then the usage, and exits 1.
        result = subprocess.run(
            [self._path, "-v"], capture_output=True, text=True, timeout=10, check=False
        )
        first = (result.stdout or result.stderr).strip().splitlines()
        return first[0].split(" Copyright")[0] if first else "unknown"

    def run(self, name: str, request: HttpRequest, seconds: int) -> LoadResult:
        """Load `request.url` for `seconds` with every connection busy; raises BenchError when
        wrk fails or prints something we cannot read."""
        with tempfile.TemporaryDirectory(dir=self._scratch, prefix="wrk-") as directory:
            argv = [
                self._path,
                f"-t{WRK_THREADS}",
                f"-c{self._connections}",
                f"-d{seconds}s",
                f"--timeout={int(REQUEST_TIMEOUT.total_seconds())}s",
                "--latency",
            ]
            if request.method != "GET" or request.body is not None or request.headers:
                script = Path(directory) / "request.lua"
                script.write_text(lua_script(request), encoding="utf-8")
                argv += ["-s", str(script)]
            argv.append(request.url)
            try:
                result = subprocess.run(
                    argv,
                    capture_output=True,
                    text=True,
                    timeout=seconds + RUN_GRACE.total_seconds(),
                    check=False,
                    preexec_fn=child_setup(self._cpu),
                )
            except subprocess.TimeoutExpired as exc:
                raise BenchError(f"wrk did not finish {name} within {seconds}s + grace") from exc
        if result.returncode != 0:
            raise BenchError(
                f"wrk failed on {name} (exit {result.returncode}): {result.stderr.strip()}"
            )
        return parse_wrk_output(name, request, self._connections, result.stdout)

    def run_each(
        self, name: str, request: HttpRequest, header: str, values: list[str], max_seconds: int
    ) -> LoadResult:
        """Send `request` once with each of `values` as `header` (cycling, so every connection
        stays busy to the end), then stop: every value answered once, the last few in flight
        perhaps twice. Raises BenchError when wrk fails, or when `max_seconds` pass first."""
        with tempfile.TemporaryDirectory(dir=self._scratch, prefix="wrk-") as directory:
            values_path, script = Path(directory) / "values", Path(directory) / "rotate.lua"
            values_path.write_text("".join(f"{value}\n" for value in values), encoding="utf-8")
            script.write_text(lua_rotating_script(request, header), encoding="utf-8")
            argv = [
                self._path,
                f"-t{WRK_THREADS}",
                f"-c{self._connections}",
                f"-d{max_seconds}s",
                f"--timeout={int(REQUEST_TIMEOUT.total_seconds())}s",
                "--latency",
                "-s",
                str(script),
                request.url,
                "--",
                str(values_path),
            ]
            output, finished = _run_until_done(argv, self._cpu, Path(directory) / "stderr")
        if not finished:
            raise BenchError(
                f"{name}: {len(values):,} requests did not complete within {max_seconds} s"
            )
        return parse_wrk_output(name, request, self._connections, output)


def _run_until_done(argv: list[str], cpu: int | None, stderr_path: Path) -> tuple[str, bool]:
    """wrk's report, and whether the script said ROTATION_DONE before wrk's own end (wrk then
    gets SIGINT, and stops). wrk ends by itself after its -d duration in any case."""
    with stderr_path.open("w", encoding="utf-8") as stderr:
        process = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            preexec_fn=child_setup(cpu),  # noqa: PLW1509 - no threads of ours run here
        )
    finished, lines = False, []
    with process:
        assert process.stdout is not None  # noqa: S101 - stdout=PIPE
        for line in process.stdout:
            if line.strip() == ROTATION_DONE and not finished:
                finished = True
                process.send_signal(signal.SIGINT)
            else:
                lines.append(line)
    # wrk runs on without a script it cannot load, saying so only on stderr.
    errors = stderr_path.read_text(encoding="utf-8", errors="replace").strip()
    if process.returncode not in (0, -signal.SIGINT) or errors:
        raise BenchError(f"wrk failed (exit {process.returncode}): {errors}")
    return "".join(lines), finished


def lua_rotating_script(request: HttpRequest, header: str) -> str:
    """A wrk script sending `request` with the next of the values (one per line of the file
    given as the script's argument) as `header`; it prints ROTATION_DONE once as many
    responses as values have come back."""
    static = ", ".join(
        f"[{_lua_string(key)}] = {_lua_string(value)}" for key, value in request.headers.items()
    )
    body = "nil" if request.body is None else _lua_string(request.body)
    return f"""local values, sent, answered = {{}}, 0, 0
init = function(args)
  for line in io.lines(args[1]) do values[#values + 1] = line end
end
request = function()
  sent = sent + 1
  local headers = {{{static}}}
  headers[{_lua_string(header)}] = values[((sent - 1) % #values) + 1]
  return wrk.format({_lua_string(request.method)}, nil, headers, {body})
end
response = function(status, headers, body)
  answered = answered + 1
  if answered == #values then
    io.stdout:write("{ROTATION_DONE}\\n")
    io.stdout:flush()
  end
end
"""


def lua_script(request: HttpRequest) -> str:
    """A wrk script that sends `request`; wrk adds Content-Length for the body itself."""
    lines = [f"wrk.method = {_lua_string(request.method)}"]
    if request.body is not None:
        lines.append(f"wrk.body = {_lua_string(request.body)}")
    lines += [
        f"wrk.headers[{_lua_string(name)}] = {_lua_string(value)}"
        for name, value in request.headers.items()
    ]
    return "\n".join(lines) + "\n"


def _lua_string(text: str) -> str:
    """A Lua string literal for any text: every byte outside printable ASCII, and the quote
    and backslash, as a decimal escape."""
    out = []
    for byte in text.encode("utf-8"):
        char = chr(byte)
        out.append(char if 32 <= byte < 127 and char not in '"\\' else f"\\{byte:03d}")
    return '"' + "".join(out) + '"'


def parse_wrk_output(name: str, request: HttpRequest, connections: int, output: str) -> LoadResult:
    """Requests/sec, the latency percentiles and the errors from `wrk --latency`."""
    rps = _RPS.search(output)
    total = _TOTAL.search(output)
    percentiles = {int(m[1]): _ms(m[2], m[3]) for m in _PERCENTILE.finditer(output)}
    if rps is None or total is None or not {50, 90, 99} <= percentiles.keys():
        raise BenchError(f"cannot read wrk's report for {name}:\n{output}")
    sockets = _SOCKET_ERRORS.search(output)
    bad_status = _BAD_STATUS.search(output)
    return LoadResult(
        name=name,
        request=request.describe(),
        connections=connections,
        seconds=_ms(total[2], total[3]) / 1000,
        requests=int(total[1]),
        requests_per_second=float(rps[1]),
        p50_ms=percentiles[50],
        p90_ms=percentiles[90],
        p99_ms=percentiles[99],
        bad_status=int(bad_status[1]) if bad_status else 0,
        socket_errors=dict(
            zip(
                ("connect", "read", "write", "timeout"),
                (int(count) for count in sockets.groups()) if sockets else (0, 0, 0, 0),
                strict=True,
            )
        ),
    )


def _ms(value: str, unit: str) -> float:
    return float(value) * _UNIT_MS[unit]


class OpenLoop:
    """`python -m bench.openloop` (see there): a fixed request rate, latency from each request's
    due time. For latency at a given load, which wrk (closed-loop) cannot hold."""

    def __init__(self, *, connections: int, cpu: int | None, env: Mapping[str, str]) -> None:
        self._connections = connections
        self._cpu = cpu
        self._env = dict(env)

    @property
    def connections(self) -> int:
        return self._connections

    def run(
        self, name: str, request: HttpRequest, *, rate: float, seconds: int, warmup: int
    ) -> LoadResult:
        """Send `request` at `rate` per second for `warmup` + `seconds` (only `seconds`
        measured); raises BenchError when the generator fails."""
        if request.method != "GET" or request.body is not None:
            raise BenchError(f"{name}: the open-loop generator sends GET without a body only")
        argv = [
            sys.executable,
            "-m",
            "bench.openloop",
            request.url,
            f"{rate:.3f}",
            str(seconds),
            *(f"{header}: {value}" for header, value in request.headers.items()),
            f"--warmup={warmup}",
            f"--connections={self._connections}",
            f"--timeout={REQUEST_TIMEOUT.total_seconds():g}",
        ]
        output = run_generator(
            "the open-loop generator",
            name,
            argv,
            env=self._env,
            cpu=self._cpu,
            timeout=seconds + warmup + RUN_GRACE.total_seconds(),
        )
        return parse_open_loop_output(name, request, output)


def run_generator(
    what: str, name: str, argv: list[str], *, env: dict[str, str], cpu: int | None, timeout: float
) -> str:
    """Run a load generator process pinned to `cpu` for run `name`; its stdout, or BenchError
    naming `what` when it fails or overruns `timeout` seconds."""
    try:
        result = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            check=False,
            preexec_fn=child_setup(cpu),
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"{what} did not finish {name} in time") from exc
    if result.returncode != 0:
        raise BenchError(
            f"{what} failed on {name} (exit {result.returncode}): {result.stderr.strip()}"
        )
    return result.stdout


def parse_open_loop_output(name: str, request: HttpRequest, output: str) -> LoadResult:
    """The LoadResult of one `python -m bench.openloop` report (a JSON object)."""
    try:
        report = json.loads(output)
        return LoadResult(
            name=name,
            request=request.describe(),
            connections=int(report["connections"]),
            seconds=float(report["seconds"]),
            requests=int(report["completed"]),
            requests_per_second=float(report["rps"]),
            p50_ms=float(report["p50_ms"]),
            p90_ms=float(report["p90_ms"]),
            p99_ms=float(report["p99_ms"]),
            bad_status=int(report["bad_status"]),
            socket_errors={k: int(v) for k, v in report["socket_errors"].items()},
            offered_rps=float(report["rate"]),
            generator={
                key: float(report[key])
                for key in (
                    "max_ms",
                    "queued",
                    "send_lag_p99_ms",
                    "send_lag_max_ms",
                    "cpu_seconds",
                    "busy_pct",
                )
            },
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BenchError(f"cannot read the open-loop report for {name}:\n{output}") from exc


@dataclass(frozen=True, slots=True)
class GrpcCall:
    """One unary gRPC call that every in-flight slot makes, over and over: an empty request
    message (as GetCredentialsRequest is) with `authorization` metadata."""

    target: str  # host:port, plaintext
    method: str  # /package.Service/Method
    authorization: str = ""

    def at(self, target: str) -> GrpcCall:
        """The same call made to another server (a baseline)."""
        return replace(self, target=target)

    def describe(self) -> str:
        return f"gRPC {self.method.rsplit('/', 1)[-1]} {self.target}"


class GrpcLoad:
    """`python -m bench.grpcload` (see there): closed-loop unary calls, `concurrency` in flight
    over `channels` HTTP/2 connections, pinned to the load-generator CPU."""

    def __init__(
        self, *, concurrency: int, channels: int, cpu: int | None, env: Mapping[str, str]
    ) -> None:
        self._concurrency = concurrency
        self._channels = channels
        self._cpu = cpu
        self._env = dict(env)

    @property
    def concurrency(self) -> int:
        return self._concurrency

    @property
    def channels(self) -> int:
        return self._channels

    def run(self, name: str, call: GrpcCall, *, seconds: int, warmup: int) -> LoadResult:
        """Make `call` for `warmup` + `seconds` (only `seconds` measured); raises BenchError
        when the generator fails (its probe call included)."""
        argv = [
            sys.executable,
            "-m",
            "bench.grpcload",
            call.target,
            str(seconds),
            f"--method={call.method}",
            f"--warmup={warmup}",
            f"--concurrency={self._concurrency}",
            f"--channels={self._channels}",
            f"--timeout={REQUEST_TIMEOUT.total_seconds():g}",
        ]
        # The token goes in the environment, not argv: ps would show it to every user.
        env = {**self._env, TOKEN_ENV: call.authorization}
        output = run_generator(
            "the gRPC generator",
            name,
            argv,
            env=env,
            cpu=self._cpu,
            timeout=seconds + warmup + RUN_GRACE.total_seconds(),
        )
        return parse_grpc_load_output(name, call, output)


def parse_grpc_load_output(name: str, call: GrpcCall, output: str) -> LoadResult:
    """The LoadResult of one `python -m bench.grpcload` report (a JSON object)."""
    try:
        report = json.loads(output)
        return LoadResult(
            name=name,
            request=call.describe(),
            connections=int(report["concurrency"]),
            seconds=float(report["seconds"]),
            requests=int(report["requests"]),
            requests_per_second=float(report["rps"]),
            p50_ms=float(report["p50_ms"]),
            p90_ms=float(report["p90_ms"]),
            p99_ms=float(report["p99_ms"]),
            bad_status=0,
            socket_errors={str(k): int(v) for k, v in report["errors"].items()},
            generator={
                key: float(report[key])
                for key in ("concurrency", "channels", "max_ms", "cpu_seconds", "busy_pct")
            },
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BenchError(f"cannot read the gRPC generator's report for {name}:\n{output}") from exc
