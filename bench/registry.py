"""What a benchmark is, and the session every benchmark runs in.

A benchmark is one function `(Session) -> list[Figure]`. The session owns the servers (started on
first use, stopped when it closes), runs every load through one wrk with warm-up, and measures
each baseline once so every figure of a run is divided by the same number.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import TypeVar

from bench.cpustat import NOISY_PCT, CpuMeter, Interference
from bench.loadgen import HttpRequest, LoadResult, Wrk
from bench.machine import CpuPlan
from bench.report import Figure
from bench.servers import BareServer, RunningServer, Warrant, bare_server, warrant_server
from bench.sign import SignResult, measure_sign_rate

__all__ = ["Benchmark", "Options", "Session"]

# A run disturbed by other processes is measured again this many times at most; the machine may
# be shared (a test suite, an editor), and a quiet second try is usually seconds away.
NOISY_RETRIES = 2

R = TypeVar("R", LoadResult, SignResult)


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
    ) -> None:
        self.options = options
        self._progress = progress
        self._wrk = wrk
        self._cpus = cpus
        self._workdir = workdir
        self._stack = contextlib.ExitStack()
        self._bare: BareServer | None = None
        self._warrant: Warrant | None = None
        self._warrant_stack: contextlib.ExitStack | None = None
        self._baselines: dict[tuple[str, str | None, tuple[str, ...]], LoadResult] = {}
        self.runs: list[LoadResult] = []
        self.signs: list[SignResult] = []

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
        """Stop every server this session started."""
        self._stop_warrant()
        self._stack.close()

    # Load.

    def load(self, name: str, request: HttpRequest, server: RunningServer) -> LoadResult:
        """Warm up, then measure; a run during which other processes took a pinned CPU is
        repeated (up to NOISY_RETRIES times) and the quietest kept. Raises BenchError if the
        server died on the way."""
        self._progress(f"{name}: {request.describe()}, {self.options.duration} s ...")
        if self.options.warmup > 0:
            self._wrk.run(f"{name} (warm-up)", request, self.options.warmup)
        result = self._quietest(lambda: self._measure(name, request, server))
        self.runs.append(result)
        return result

    def _quietest(self, measure: Callable[[], R]) -> R:
        results: list[R] = []
        for attempt in range(1 + NOISY_RETRIES):
            if attempt:
                self._progress("  noisy (other processes used a pinned CPU); measuring again")
            results.append(measure())
            if _noise(results[-1].interference) <= NOISY_PCT:
                break
        return min(results, key=lambda result: _noise(result.interference))

    def _measure(self, name: str, request: HttpRequest, server: RunningServer) -> LoadResult:
        meter = CpuMeter(server.process.pid, self._cpus.server, self._cpus.loadgen)
        meter.start()
        result = self._wrk.run(name, request, self.options.duration)
        result = replace(result, interference=meter.stop())
        server.check_alive()
        errors = f", ERRORS: {result.error_summary()}" if result.errors else ""
        self._progress(
            f"  {result.requests_per_second:,.0f} req/s, p50 {result.p50_ms:.2f} ms, "
            f"p99 {result.p99_ms:.2f} ms{errors}{_others(result.interference)}"
        )
        return result

    def baseline(self, like: HttpRequest) -> LoadResult:
        """The bare server loaded with the same request shape (method, body, header names),
        measured once per session."""
        key = (like.method, like.body, tuple(sorted(name.lower() for name in like.headers)))
        if key not in self._baselines:
            bare = self.bare()
            self._baselines[key] = self.load(f"bare {like.method}", like.at(bare.url), bare.server)
        return self._baselines[key]

    # Servers.

    def bare(self) -> BareServer:
        if self._bare is None:
            self._bare = self._stack.enter_context(
                bare_server(cpu=self._cpus.server, workdir=self._workdir)
            )
        return self._bare

    def warrant(self, alg: str) -> Warrant:
        """`warrant serve` signing with `alg`; a different alg restarts it on a fresh data dir."""
        if self._warrant is not None and self._warrant.alg == alg:
            return self._warrant
        self._stop_warrant()
        stack = contextlib.ExitStack()
        self._warrant = stack.enter_context(
            warrant_server(alg, cpu=self._cpus.server, workdir=self._workdir)
        )
        self._warrant_stack = stack
        return self._warrant

    def _stop_warrant(self) -> None:
        if self._warrant_stack is not None:
            self._warrant_stack.close()
        self._warrant, self._warrant_stack = None, None

    # Signing.

    def sign_rate(self, name: str, warrant: Warrant, signing_input: bytes, kid: str) -> SignResult:
        """Raw signing rate of `warrant`'s active key, on the server's CPU, server idle."""
        self._progress(f"{name}: raw signing, {self.options.duration} s ...")
        result = self._quietest(lambda: self._measure_signing(name, warrant, signing_input, kid))
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
