"""What a benchmark is, and the session every benchmark runs in.

A benchmark is one function `(Session) -> list[Figure]`. The session owns the servers and the
STS stand-in (started on first use, stopped when it closes), runs every load through one wrk (or
the open-loop generator, for latency at a fixed rate, or the gRPC generator) with warm-up, times
in-process latency runs on the load-generator CPU, and measures each baseline once so every
figure of a run is divided by the same number.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import TypeVar

from bench.cpustat import NOISY_PCT, CpuMeter, Interference
from bench.errors import BenchError
from bench.latency import LatencyRun
from bench.loadgen import GrpcCall, GrpcLoad, HttpRequest, LoadResult, OpenLoop, Wrk
from bench.machine import CpuPlan, pinned
from bench.report import Figure
from bench.servers import (
    BareGrpcServer,
    BareServer,
    RunningServer,
    Warrant,
    bare_grpc_server,
    bare_server,
    python_env,
    warrant_server,
)
from bench.sign import SignResult, measure_sign_rate
from bench.world import BROKER_ALG, BrokerWorld

# The most a pass over many values (Session.load_each) may take: 100,000 uncached vends run at a
# few thousand per second.
EACH_MAX = 600  # seconds

__all__ = ["Benchmark", "Options", "Session"]

# A run disturbed by other processes is measured again this many times at most; the machine may
# be shared (a test suite, an editor), and a quiet second try is usually seconds away.
NOISY_RETRIES = 2
# HTTP/2 connections the gRPC generator spreads its calls over (calls in flight: --connections).
# Measured on 2 vCPUs: 32x1 to 128x16 (calls x channels) give the same rate within noise, for
# the bare server (its CPU 100% busy, the generator's ~87%) and for Warrant alike.
GRPC_CHANNELS = 4

T = TypeVar("T")
S = TypeVar("S")


@dataclass(frozen=True, slots=True)
class Options:
    duration: int  # seconds measured per load run
    warmup: int  # seconds of load before each measurement, not counted
    connections: int


@dataclass(frozen=True, slots=True)
class Benchmark:
    name: str  # what `--only` selects
    summary: str
    run: Callable[[Session], list[Figure]]


class Session:
    def __init__(
        self,
        options: Options,
        wrk: Wrk,
        cpus: CpuPlan,
        workdir: Path,
        progress: Callable[[str], None],
        *,
        open_loop: OpenLoop,
        grpc_load: GrpcLoad | None = None,
    ) -> None:
        self.options = options
        self._progress = progress
        self._wrk = wrk
        self._open_loop = open_loop
        self._grpc_load = grpc_load or GrpcLoad(
            concurrency=options.connections,
            channels=GRPC_CHANNELS,
            cpu=cpus.loadgen,
            env=python_env(),
        )
        self._cpus = cpus
        self._workdir = workdir
        self._stack = contextlib.ExitStack()
        self._bare: BareServer | None = None
        self._bare_grpc: BareGrpcServer | None = None
        self._warrant: Warrant | None = None
        self._warrant_stack: contextlib.ExitStack | None = None
        self._standin_url: str | None = None
        self._world: BrokerWorld | None = None
        self._baselines: dict[tuple[str, str | None, tuple[str, ...]], LoadResult] = {}
        self._grpc_baselines: dict[tuple[str, bool], LoadResult] = {}
        self.runs: list[LoadResult] = []
        self.signs: list[SignResult] = []
        self.latencies: list[LatencyRun] = []
        self.skipped: list[tuple[str, str]] = []  # (benchmark, why), for the report

    def __enter__(self) -> Session:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop every server this session started, then the stand-in."""
        try:
            self._stop_warrant()
        finally:
            self._stack.close()

    def progress(self, message: str) -> None:
        """A line on stderr while the benchmarks run."""
        self._progress(message)

    @property
    def cpus(self) -> CpuPlan:
        return self._cpus

    @property
    def workdir(self) -> Path:
        """Scratch space of this run, removed when it ends."""
        return self._workdir

    def skip(self, name: str, reason: str) -> None:
        """Record that `name` could not run here, and why: a line now and in the report."""
        self._progress(f"  skipped: {reason}")
        self.skipped.append((name, reason))

    def run_named(self, name: str) -> LoadResult | None:
        """The load run of this session called `name`, if one was made."""
        return next((run for run in self.runs if run.name == name), None)

    def add_latencies(self, runs: Sequence[LatencyRun]) -> None:
        """One-at-a-time timings a benchmark made itself, for the report."""
        self.latencies += runs

    # Load.

    def load(self, name: str, request: HttpRequest, server: RunningServer) -> LoadResult:
        """Warm up, then measure; a run during which other processes took a pinned CPU is
        repeated (up to NOISY_RETRIES times) and the quietest kept. Raises BenchError if the
        server died on the way."""
        self._progress(f"{name}: {request.describe()}, {self.options.duration} s ...")
        if self.options.warmup > 0:
            self._wrk.run(f"{name} (warm-up)", request, self.options.warmup)
        result = self._quietest(
            lambda: self._measure(name, request, server), lambda r: _noise(r.interference)
        )
        self.runs.append(result)
        return result

    def load_each(
        self, name: str, request: HttpRequest, header: str, values: list[str], server: RunningServer
    ) -> LoadResult:
        """One pass of `request` with each of `values` as `header` (wrk, every connection busy),
        no warm-up and no repeat: the pass changes the server's state. Its rate, and others'
        use of the CPUs meanwhile, are reported as for any load run."""
        self._progress(f"{name}: {request.describe()} x {len(values):,} {header} values ...")
        meter = CpuMeter(server.process.pid, self._cpus.server, self._cpus.loadgen)
        meter.start()
        result = self._wrk.run_each(name, request, header, values, EACH_MAX)
        result = replace(result, interference=meter.stop())
        server.check_alive()
        errors = f", ERRORS: {result.error_summary()}" if result.errors else ""
        self._progress(
            f"  {result.requests:,} requests in {result.seconds:.1f} s, "
            f"{result.requests_per_second:,.0f} req/s, p50 {result.p50_ms:.2f} ms, "
            f"p99 {result.p99_ms:.2f} ms{errors}{_others(result.interference)}"
        )
        self.runs.append(result)
        return result

    def load_at_rate(
        self, name: str, request: HttpRequest, rate: float, server: RunningServer
    ) -> LoadResult:
        """As `load`, with the open-loop generator holding `rate` requests per second; its
        latencies count from each request's due time. The warm-up runs at the same rate."""
        self._progress(
            f"{name}: {request.describe()} at {rate:,.0f} req/s (open loop), "
            f"{self.options.duration} s ..."
        )
        result = self._quietest(
            lambda: self._measure_at_rate(name, request, rate, server),
            lambda r: _noise(r.interference),
        )
        self.runs.append(result)
        return result

    def load_grpc(self, name: str, call: GrpcCall, server: RunningServer) -> LoadResult:
        """As `load`, with the gRPC generator (bench.grpcload): `call` made by every in-flight
        slot, over and over; the warm-up runs in the same generator process, unmeasured."""
        self._progress(
            f"{name}: {call.describe()}, {self._grpc_load.concurrency} calls in flight on "
            f"{self._grpc_load.channels} channels, {self.options.duration} s ..."
        )
        result = self._quietest(
            lambda: self._measure_grpc(name, call, server), lambda r: _noise(r.interference)
        )
        self.runs.append(result)
        return result

    def latency(
        self,
        name: str,
        server: RunningServer,
        prepare: Callable[[], S],
        measure: Callable[[S], list[LatencyRun]],
    ) -> list[LatencyRun]:
        """`measure(prepare())`: requests timed one at a time by this process, on the
        load-generator CPU (where the stand-in's threads run too), with the same noise check and
        retries as a load run. Every attempt calls `prepare` again, unmeasured, for fresh state.
        Raises BenchError if the server died on the way."""
        runs = self._quietest(
            lambda: self._measure_latency(name, server, prepare, measure),
            lambda rs: max((_noise(r.interference) for r in rs), default=0.0),
        )
        self.latencies += runs
        return runs

    def quietest(self, measure: Callable[[], T], noise: Callable[[T], float]) -> T:
        """`measure()`, repeated up to NOISY_RETRIES times while `noise` of its result (the
        worst share of a pinned CPU others took) is above NOISY_PCT; the quietest result."""
        return self._quietest(measure, noise)

    def _quietest(self, measure: Callable[[], T], noise: Callable[[T], float]) -> T:
        results: list[T] = []
        for attempt in range(1 + NOISY_RETRIES):
            if attempt:
                self._progress("  noisy (other processes used a pinned CPU); measuring again")
            results.append(measure())
            if noise(results[-1]) <= NOISY_PCT:
                break
        return min(results, key=noise)

    def _measure(self, name: str, request: HttpRequest, server: RunningServer) -> LoadResult:
        return self._metered(
            server,
            lambda: self._wrk.run(name, request, self.options.duration),
            lambda r: (
                f"{r.requests_per_second:,.0f} req/s, p50 {r.p50_ms:.2f} ms, p99 {r.p99_ms:.2f} ms"
            ),
        )

    def _measure_at_rate(
        self, name: str, request: HttpRequest, rate: float, server: RunningServer
    ) -> LoadResult:
        def summary(r: LoadResult) -> str:
            lag = (r.generator or {}).get("send_lag_p99_ms", 0.0)
            return (
                f"{r.requests_per_second:,.0f} req/s done, p50 {r.p50_ms:.2f} ms, "
                f"p90 {r.p90_ms:.2f} ms, p99 {r.p99_ms:.2f} ms (generator send lag p99 "
                f"{lag:.3f} ms)"
            )

        return self._metered(
            server,
            lambda: self._open_loop.run(
                name, request, rate=rate, seconds=self.options.duration, warmup=self.options.warmup
            ),
            summary,
        )

    def _measure_grpc(self, name: str, call: GrpcCall, server: RunningServer) -> LoadResult:
        def summary(r: LoadResult) -> str:
            busy = (r.generator or {}).get("busy_pct", 0.0)
            return (
                f"{r.requests_per_second:,.0f} RPC/s, p50 {r.p50_ms:.2f} ms, "
                f"p99 {r.p99_ms:.2f} ms (generator busy {busy:g}% of its CPU)"
            )

        return self._metered(
            server,
            lambda: self._grpc_load.run(
                name, call, seconds=self.options.duration, warmup=self.options.warmup
            ),
            summary,
        )

    def _metered(
        self,
        server: RunningServer,
        run: Callable[[], LoadResult],
        summary: Callable[[LoadResult], str],
    ) -> LoadResult:
        """`run()` with the pinned CPUs' interference measured around it, the server checked
        alive after it, and one progress line: `summary`, errors, interference."""
        meter = CpuMeter(server.process.pid, self._cpus.server, self._cpus.loadgen)
        meter.start()
        result = replace(run(), interference=meter.stop())
        server.check_alive()
        errors = f", ERRORS: {result.error_summary()}" if result.errors else ""
        self._progress(f"  {summary(result)}{errors}{_others(result.interference)}")
        return result

    def _measure_latency(
        self,
        name: str,
        server: RunningServer,
        prepare: Callable[[], S],
        measure: Callable[[S], list[LatencyRun]],
    ) -> list[LatencyRun]:
        self._progress(f"{name}: preparing, then timing requests one at a time ...")
        meter = CpuMeter(
            server.process.pid, self._cpus.server, self._cpus.loadgen, loadgen_pid=os.getpid()
        )
        with pinned(self._cpus.loadgen):
            state = prepare()
            meter.start()
            runs = measure(state)
            interference = meter.stop()
        server.check_alive()
        runs = [replace(run, interference=interference) for run in runs]
        for run in runs:
            errors = f", ERRORS: {run.errors}" if run.errors else ""
            self._progress(
                f"  {run.name}: median {run.median_ms:.2f} ms, p90 {run.p90_ms:.2f} ms over "
                f"{run.count} samples{errors}"
            )
        if interference is not None:
            self._progress(f"  {_others(interference).removeprefix('; ')}")
        return runs

    def baseline(self, like: HttpRequest, *, name: str | None = None) -> LoadResult:
        """The bare server loaded with the same request shape (method, body, header names),
        measured once per session; `name` labels the run (default 'bare <method>')."""
        key = (like.method, like.body, tuple(sorted(name.lower() for name in like.headers)))
        if key not in self._baselines:
            bare = self.bare()
            label = name or f"bare {like.method}"
            self._baselines[key] = self.load(label, like.at(bare.url), bare.server)
        return self._baselines[key]

    def grpc_baseline(self, like: GrpcCall, *, name: str = "bare gRPC") -> LoadResult:
        """The bare gRPC server (bench.bare_grpc) called like `like` (same method, same
        metadata), measured once per session."""
        key = (like.method, bool(like.authorization))
        if key not in self._grpc_baselines:
            bare = self.bare_grpc()
            self._grpc_baselines[key] = self.load_grpc(name, like.at(bare.target), bare.server)
        return self._grpc_baselines[key]

    # Servers.

    def bare(self) -> BareServer:
        if self._bare is None:
            self._bare = self._stack.enter_context(
                bare_server(cpu=self._cpus.server, workdir=self._workdir)
            )
        return self._bare

    def bare_grpc(self) -> BareGrpcServer:
        if self._bare_grpc is None:
            self._bare_grpc = self._stack.enter_context(
                bare_grpc_server(cpu=self._cpus.server, workdir=self._workdir)
            )
        return self._bare_grpc

    def warrant(self, alg: str, *, sts_endpoint: str | None = None) -> Warrant:
        """`warrant serve` signing with `alg` (its broker using `sts_endpoint`, when given); a
        different alg or endpoint restarts it on a fresh data dir."""
        current = self._warrant
        if current is not None and (current.alg, current.sts_endpoint) == (alg, sts_endpoint):
            return current
        self._stop_warrant()
        stack = contextlib.ExitStack()
        try:
            self._warrant = stack.enter_context(
                warrant_server(
                    alg, cpu=self._cpus.server, workdir=self._workdir, sts_endpoint=sts_endpoint
                )
            )
        except BaseException:
            stack.close()
            raise
        self._warrant_stack = stack
        return self._warrant

    @contextlib.contextmanager
    def fresh_broker(self, label: str, *, sts_endpoint: str | None = None) -> Iterator[BrokerWorld]:
        """A `warrant serve` of its own (new data dir, nothing cached) exchanging at
        `sts_endpoint` (default: the stand-in), not yet set up (call `setup()`); stopped on
        leaving. The session's shared server is stopped first: one server at a time on the
        server CPU."""
        standin = sts_endpoint or self.standin()
        self._stop_warrant()
        with contextlib.ExitStack() as stack:
            warrant = stack.enter_context(
                warrant_server(
                    BROKER_ALG,
                    cpu=self._cpus.server,
                    workdir=self._workdir,
                    sts_endpoint=standin,
                    label=label,
                )
            )
            world = BrokerWorld(warrant)
            stack.callback(world.close)
            yield world

    def _stop_warrant(self) -> None:
        stack = self._warrant_stack
        self._warrant, self._warrant_stack, self._world = None, None, None
        if stack is not None:
            stack.close()

    def standin(self) -> str:
        """The STS stand-in (moto behind the strict gate) in this process; its endpoint URL.
        Its threads are pinned to the load-generator CPU: the server's CPU stays the server's."""
        if self._standin_url is None:
            # Imported here: moto takes seconds to import, and only the broker's figures need it.
            from broker.standin import StandIn  # noqa: PLC0415

            standin = StandIn(allow_http_issuers=True)
            with pinned(self._cpus.loadgen):  # threads started in here inherit the affinity
                try:
                    standin.start()
                except Exception as exc:
                    standin.stop()
                    raise BenchError(f"the STS stand-in did not start: {exc}") from exc
            self._stack.callback(standin.stop)
            self._standin_url = standin.endpoint_url
            where = "" if self._cpus.loadgen is None else f", on CPU {self._cpus.loadgen}"
            self._progress(f"stand-in: moto behind the STS gate at {self._standin_url}{where}")
        return self._standin_url

    def broker(self) -> BrokerWorld:
        """`warrant serve` exchanging at the stand-in, with its IAM OIDC provider registered and
        the benchmark tenant added."""
        warrant = self.warrant(BROKER_ALG, sts_endpoint=self.standin())
        stack = self._warrant_stack
        if self._world is None and stack is not None:
            world = BrokerWorld(warrant)
            stack.callback(world.close)
            world.setup()
            self._world = world
        if self._world is None:
            raise BenchError("the broker's server is not running")
        return self._world

    # Signing.

    def sign_rate(self, name: str, warrant: Warrant, signing_input: bytes, kid: str) -> SignResult:
        """Raw signing rate of `warrant`'s active key, on the server's CPU, server idle."""
        self._progress(f"{name}: raw signing, {self.options.duration} s ...")
        result = self._quietest(
            lambda: self._measure_signing(name, warrant, signing_input, kid),
            lambda r: _noise(r.interference),
        )
        self.signs.append(result)
        return result

    def _measure_signing(
        self, name: str, warrant: Warrant, signing_input: bytes, kid: str
    ) -> SignResult:
        meter = CpuMeter(os.getpid(), self._cpus.server, loadgen_cpu=None)
        meter.start()
        result = measure_sign_rate(
            name,
            warrant.keys_dir,
            signing_input,
            seconds=self.options.duration,
            warmup=self.options.warmup,
            cpu=self._cpus.server,
            expect_kid=kid,
        )
        result = replace(result, interference=meter.stop())
        self._progress(
            f"  {result.rate:,.0f} signatures/s ({result.alg}){_others(result.interference)}"
        )
        return result


def _noise(interference: Interference | None) -> float:
    return interference.worst_pct if interference else 0.0


def _others(interference: Interference | None) -> str:
    if interference is None:
        return ""
    text = f"; others took {interference.server_cpu_pct:g}% of the server CPU"
    if interference.loadgen_cpu_pct is not None:
        text += f", {interference.loadgen_cpu_pct:g}% of the wrk CPU"
    return text


def select(registry: Sequence[Benchmark], names: Sequence[str] | None) -> list[Benchmark]:
    """The benchmarks named (all when None), in registry order; ValueError for an unknown name."""
    known = {b.name for b in registry}
    unknown = [name for name in names or () if name not in known]
    if unknown:
        raise ValueError(
            f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(sorted(known))}"
        )
    return [b for b in registry if names is None or b.name in names]
