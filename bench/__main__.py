"""`python -m bench`: run the benchmarks, print the table, write bench/results/latest.{json,md}
and the chart bench/results/latest.png.

Exit status: 0 when every figure was measured cleanly (PASS or MISS alike: a miss is a result),
1 when a benchmark failed or any request under load failed, 2 when wrk is missing or an option
is wrong, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from bench import broker_bench, issuer_bench, peer_bench, scale_bench, startup_bench
from bench.chart import write_chart
from bench.errors import BenchError
from bench.loadgen import OpenLoop, Wrk, WrkMissing
from bench.machine import CpuPlan, facts
from bench.registry import Benchmark, Options, Session, select
from bench.report import Figure, Report, render_text, write
from bench.servers import python_env

# Every benchmark, in the order they run. A new one (grpc) is a function and a line here.
REGISTRY: tuple[Benchmark, ...] = (
    *issuer_bench.BENCHMARKS,
    *broker_bench.BENCHMARKS,
    *scale_bench.BENCHMARKS,
    *startup_bench.BENCHMARKS,
    *peer_bench.BENCHMARKS,  # last: it reuses the jwks, discovery and mint runs made above
)

DEFAULT_DURATION = 5  # seconds: enough for a stable mean at thousands of requests per second
DEFAULT_WARMUP = 1  # seconds: connections open and caches fill before the clock starts
DEFAULT_CONNECTIONS = 32
EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130


def _count(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}")
        return value

    return parse


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Warrant's benchmarks: wrk against the real server and a bare baseline.",
    )
    p.add_argument(
        "--duration",
        type=_count(1),
        default=DEFAULT_DURATION,
        metavar="SECONDS",
        help=f"measured seconds per load run (default {DEFAULT_DURATION})",
    )
    p.add_argument(
        "--warmup",
        type=_count(0),
        default=DEFAULT_WARMUP,
        metavar="SECONDS",
        help=f"unmeasured load before each run (default {DEFAULT_WARMUP})",
    )
    p.add_argument(
        "--connections",
        type=_count(1),
        default=DEFAULT_CONNECTIONS,
        metavar="N",
        help=f"concurrent connections (default {DEFAULT_CONNECTIONS})",
    )
    p.add_argument(
        "--only",
        type=_names,
        metavar="NAMES",
        help=f"comma-separated subset of: {', '.join(b.name for b in REGISTRY)}",
    )
    p.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.list:
        for benchmark in REGISTRY:
            print(f"{benchmark.name:<12} {benchmark.summary}")
        return 0
    try:
        selected = select(REGISTRY, args.only)
    except ValueError as exc:
        parser().error(str(exc))
    signal.signal(signal.SIGTERM, _interrupt)  # so `finally` stops the servers
    options = Options(duration=args.duration, warmup=args.warmup, connections=args.connections)
    try:
        return _run(selected, options)
    except KeyboardInterrupt:
        print("interrupted; servers stopped", file=sys.stderr)
        return EXIT_INTERRUPTED


def _run(selected: Sequence[Benchmark], options: Options) -> int:
    cpus = CpuPlan.detect()
    with tempfile.TemporaryDirectory(prefix="warrant-bench-") as scratch:
        try:
            wrk = Wrk.find(connections=options.connections, cpu=cpus.loadgen, scratch=Path(scratch))
        except WrkMissing as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        open_loop = OpenLoop(connections=options.connections, cpu=cpus.loadgen, env=python_env())
        started = datetime.now(UTC)
        figures: list[Figure] = []
        session = Session(
            options, wrk, cpus, Path(scratch), progress=_progress, open_loop=open_loop
        )
        try:
            with session:
                for benchmark in selected:
                    _progress(f"== {benchmark.name}: {benchmark.summary}")
                    figures += benchmark.run(session)
        except BenchError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_FAILED
        report = Report(
            date=started.strftime("%Y-%m-%dT%H:%M:%SZ"),
            machine=facts(wrk.version(), cpus),
            options={
                "duration": options.duration,
                "warmup": options.warmup,
                "connections": options.connections,
                "benchmarks": [b.name for b in selected],
            },
            figures=figures,
            runs=session.runs,
            signs=session.signs,
            latencies=session.latencies,
            skipped=session.skipped,
        )
    print(render_text(report))
    json_path, md_path = write(report)
    print(f"written: {json_path}, {md_path}, {write_chart(report)}")
    if not report.clean:
        print("error: requests failed under load; those figures are marked ERROR", file=sys.stderr)
        return EXIT_FAILED
    return 0


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
