"""Time from start to ready: what an orchestrator waits for before routing to a new replica.

startup  from spawning `warrant serve` to GET /readyz answering 200 (database and signing key
         ready) and the gRPC health check answering SERVING, polled every READY_POLL from the
         load-generator CPU; median of STARTS starts on a fresh data dir (keys generated,
         database created and migrated, API keys written) and as many on that same data dir
         again; ÷ the bare app's (python -m bench.bare) spawn-to-first-200, measured the same way
         in the same rounds. The server is pinned to the server CPU, as for every figure.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from pathlib import Path

import httpx

from bench.cpustat import CpuMeter, Interference
from bench.errors import BenchError
from bench.latency import LatencyRun
from bench.machine import child_setup, pinned
from bench.registry import Benchmark, Session
from bench.report import Figure
from bench.servers import (
    Probe,
    RunningServer,
    bare_argv,
    free_port,
    grpc_serving,
    python_env,
    warrant_launch,
)
from bench.world import BROKER_ALG

__all__ = ["BENCHMARKS"]

STARTS = 5  # per kind; rounds interleave fresh, existing and bare so noise hits all alike
STARTUP_TARGET_MS = 1_500.0
READY_POLL = timedelta(milliseconds=5)
READY_TIMEOUT = timedelta(seconds=30)
PROBE_TIMEOUT = timedelta(seconds=1)
FRESH, EXISTING, BARE = "fresh data dir", "existing data dir", "bare app"


@dataclass(frozen=True, slots=True)
class _Start:
    ms: float
    noise: Interference | None


@dataclass(frozen=True, slots=True)
class _Spawn:
    name: str
    argv: Sequence[str]
    env: Mapping[str, str]
    probes: Sequence[Callable[[httpx.Client], Probe]]


def startup(session: Session) -> list[Figure]:
    starts: dict[str, list[_Start]] = {FRESH: [], EXISTING: [], BARE: []}
    fresh_dirs = _FreshDirs(session.workdir)
    for round_ in range(1, STARTS + 1):
        spawns: dict[str, Callable[[], _Spawn]] = {
            FRESH: fresh_dirs.spawn,
            EXISTING: fresh_dirs.spawn_existing,  # the data dir the fresh start just left
            BARE: partial(_bare, "startup-bare"),
        }
        for kind, spawn in spawns.items():
            starts[kind].append(session.quietest(partial(_time_start, session, spawn), _noise))
        session.progress(
            f"startup round {round_}/{STARTS}: "
            + ", ".join(f"{kind} {starts[kind][-1].ms:.0f} ms" for kind in starts)
        )
    runs = {kind: _latency_run(kind, samples) for kind, samples in starts.items()}
    session.add_latencies(list(runs.values()))
    return [_figure(kind, runs[kind], runs[BARE]) for kind in (FRESH, EXISTING)]


@dataclass
class _FreshDirs:
    """Every fresh start gets an empty data dir of its own; an existing start reuses the
    latest one."""

    workdir: Path
    made: int = 0

    def spawn(self) -> _Spawn:
        self.made += 1
        return _warrant("startup-fresh", self._dir())

    def spawn_existing(self) -> _Spawn:
        return _warrant("startup-existing", self._dir())

    def _dir(self) -> Path:
        return self.workdir / f"startup-{self.made}-data"


def _noise(start: _Start) -> float:
    return start.noise.worst_pct if start.noise else 0.0


def _warrant(name: str, data_dir: Path) -> _Spawn:
    launch = warrant_launch(BROKER_ALG, data_dir=data_dir, name=name)
    target = launch.grpc_target
    return _Spawn(
        name,
        launch.argv,
        launch.env,
        [
            lambda client: _http_probe(client, launch.ready_url),
            lambda _: Probe(f"grpc health at {target}", partial(grpc_serving, target)),
        ],
    )


def _bare(name: str) -> _Spawn:
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    return _Spawn(name, bare_argv(port), python_env(), [lambda client: _http_probe(client, url)])


def _http_probe(client: httpx.Client, url: str) -> Probe:
    def check() -> bool:
        try:
            return client.get(url).status_code == 200
        except httpx.TransportError:
            return False

    return Probe(url, check)


def _time_start(session: Session, make: Callable[[], _Spawn]) -> _Start:
    """Milliseconds from spawning `make()` to every probe passing, in order; the server is
    stopped before this returns."""
    spawn = make()
    cpus, workdir = session.cpus, session.workdir
    stdout_path, stderr_path = workdir / f"{spawn.name}.stdout", workdir / f"{spawn.name}.stderr"
    with (
        pinned(cpus.loadgen),
        stdout_path.open("wb") as stdout,
        stderr_path.open("wb") as stderr,
        httpx.Client(timeout=PROBE_TIMEOUT.total_seconds()) as client,
    ):
        probes = [make(client) for make in spawn.probes]
        start = time.perf_counter()
        process = subprocess.Popen(
            list(spawn.argv),
            env=dict(spawn.env),
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            preexec_fn=child_setup(cpus.server),  # noqa: PLW1509 - no threads of ours here
        )
        server = RunningServer(spawn.name, process, stdout_path, stderr_path)
        meter = CpuMeter(process.pid, cpus.server, cpus.loadgen, loadgen_pid=os.getpid())
        meter.start()
        try:
            _wait(server, probes)
            elapsed_ms = (time.perf_counter() - start) * 1000
            noise = meter.stop()
        finally:
            client.close()  # no idle keep-alive connection for the server to drain
            server.stop()
    return _Start(elapsed_ms, noise)


def _wait(server: RunningServer, probes: Sequence[Probe]) -> None:
    deadline = time.perf_counter() + READY_TIMEOUT.total_seconds()
    pending = list(probes)
    while pending:
        if pending[0].check():
            pending.pop(0)
            continue
        server.check_alive()
        if time.perf_counter() > deadline:
            raise BenchError(
                f"{server.name} was not ready within {READY_TIMEOUT.total_seconds():g} s at "
                f"{pending[0].what}:\n{server.stderr_tail() or '(no stderr)'}"
            )
        time.sleep(READY_POLL.total_seconds())


def _latency_run(kind: str, starts: Sequence[_Start]) -> LatencyRun:
    what = (
        "spawn -> GET / 200" if kind == BARE else "spawn -> GET /readyz 200 + gRPC health SERVING"
    )
    noises = [s.noise for s in starts if s.noise is not None]
    worst = (
        Interference(
            server_cpu_pct=max(n.server_cpu_pct for n in noises),
            loadgen_cpu_pct=max(n.loadgen_cpu_pct or 0.0 for n in noises),
        )
        if noises
        else None
    )
    return LatencyRun(f"start to ready, {kind}", what, [s.ms for s in starts], 0, worst)


def _figure(kind: str, run: LatencyRun, bare: LatencyRun) -> Figure:
    return Figure(
        name=f"start to ready, {kind}",
        measured=run.median_ms,
        baseline=bare.median_ms,
        baseline_label="bare app, median",
        target=STARTUP_TARGET_MS,
        unit="ms",
        upper_bound=True,
        errors=run.errors + bare.errors,
        others_pct=max(
            (r.interference.worst_pct for r in (run, bare) if r.interference), default=0.0
        ),
        detail=f"{run.median_ms / bare.median_ms:.1f}x bare" if bare.median_ms else "",
        note=(
            f"median of {run.count} starts (min {run.min_ms:.0f}, max {run.max_ms:.0f} ms) from "
            "spawning `warrant serve` (dev mode, SQLite, every listener) to GET /readyz 200 and "
            f"gRPC health SERVING, polled every {READY_POLL.total_seconds() * 1000:g} ms; "
            + (
                "fresh: an empty data dir (signing key generated, database created and "
                "migrated, API keys written)"
                if kind == FRESH
                else "existing: the data dir a fresh start left"
            )
            + f". Bare app: python -m bench.bare, spawn to first 200, median {bare.median_ms:.0f} "
            f"ms (min {bare.min_ms:.0f}, max {bare.max_ms:.0f})"
        ),
    )


BENCHMARKS = (
    Benchmark(
        "startup",
        f"spawn to /readyz 200 + gRPC SERVING, fresh and existing data dir (median of {STARTS})",
        startup,
    ),
)
