"""A closed-loop gRPC load generator: N unary calls always in flight, spread over C channels.

wrk speaks HTTP/1.1 only, so gRPC needs a generator of its own; this is the gRPC counterpart of
a wrk run (every in-flight slot sends its next call when the previous answer arrives), for the
maximum rate a server sustains.

    python -m bench.grpcload TARGET SECONDS [--token T] [--warmup S] [--concurrency N]
        [--channels C] [--method /pkg.Service/Method] [--timeout S] [--loop asyncio|uvloop]

TARGET is host:port (plaintext). Every call sends an empty request message (what
GetCredentialsRequest serializes to) with `authorization: T` metadata (T from --token or, kept
out of ps, $BENCH_GRPC_TOKEN) and keeps the answer as bytes: deserializing it would only cost
the generator CPU. Before the load, one probe call per channel must succeed. Each channel has
its own subchannel pool, hence its own TCP connection. Only calls that finish inside the
measured window, after the warm-up, count.

One JSON object is printed on stdout: requests, rps, latency percentiles (ms), errors by status
code, and the generator's own CPU time in the window (`cpu_seconds`, `busy_pct` of one CPU: near
100 the generator, not the server, is the bottleneck).

`bench.loadgen.GrpcLoad` runs it from the harness, pinned to the load-generator CPU. It imports
only grpc, uvloop and the standard library, so it starts fast and stays small.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import grpc

from bench.openloop import percentile

__all__ = ["Plan", "main", "run"]

GET_CREDENTIALS = "/warrant.v1.CredentialBroker/GetCredentials"
TOKEN_ENV = "BENCH_GRPC_TOKEN"  # noqa: S105 - the name of a variable, not a secret
DEFAULT_CONCURRENCY = 32
DEFAULT_CHANNELS = 4
# As wrk's --timeout: a call slower than this is DEADLINE_EXCEEDED, not a sample.
REQUEST_TIMEOUT = timedelta(seconds=2)
# How long the probe call may take: the first call on a channel connects.
PROBE_TIMEOUT = timedelta(seconds=5)
# Each channel its own connection: grpcio otherwise shares one subchannel between channels
# with the same target and arguments.
CHANNEL_OPTIONS = (("grpc.use_local_subchannel_pool", 1),)

Method = grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]


@dataclass(frozen=True, slots=True)
class Plan:
    target: str  # host:port
    method: str
    request: bytes
    metadata: tuple[tuple[str, str], ...]
    seconds: float
    warmup: float
    concurrency: int
    channels: int
    timeout: float


@dataclass
class _Tally:
    """What happened to the calls that finished inside the measured window."""

    measure_from: float
    measure_until: float
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    cpu_at_start: float = 0.0
    cpu_at_end: float = 0.0

    def record(self, started: float, done: float, code: grpc.StatusCode) -> None:
        if not self.measure_from <= done <= self.measure_until:
            return
        if code is grpc.StatusCode.OK:
            self.latencies.append(done - started)
        else:
            self.errors[code.name] += 1


async def _worker(call: Method, plan: Plan, tally: _Tally) -> None:
    while (started := time.perf_counter()) < tally.measure_until:
        try:
            await call(plan.request, metadata=plan.metadata, timeout=plan.timeout)
            code = grpc.StatusCode.OK
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
        tally.record(started, time.perf_counter(), code)


async def _cpu_clock(tally: _Tally) -> None:
    """The generator's CPU time (every thread: grpcio's too) at the window's edges."""
    await asyncio.sleep(max(0.0, tally.measure_from - time.perf_counter()))
    tally.cpu_at_start = time.process_time()
    await asyncio.sleep(max(0.0, tally.measure_until - time.perf_counter()))
    tally.cpu_at_end = time.process_time()


async def _probe(call: Method, plan: Plan) -> None:
    """One call that must succeed; raises grpc.aio.AioRpcError otherwise."""
    await call(plan.request, metadata=plan.metadata, timeout=PROBE_TIMEOUT.total_seconds())


async def run(plan: Plan) -> dict[str, Any]:
    """Probe, warm up, measure; the report as a JSON-ready dict (milliseconds)."""
    channels = [
        grpc.aio.insecure_channel(plan.target, options=CHANNEL_OPTIONS)
        for _ in range(plan.channels)
    ]
    try:
        calls: list[Method] = [channel.unary_unary(plan.method) for channel in channels]
        for call in calls:  # every channel connected before the clock starts
            await _probe(call, plan)
        start = time.perf_counter()
        tally = _Tally(start + plan.warmup, start + plan.warmup + plan.seconds)
        gc.disable()  # a collection pause would be charged to the server
        try:
            await asyncio.gather(
                _cpu_clock(tally),
                *(_worker(calls[i % len(calls)], plan, tally) for i in range(plan.concurrency)),
            )
        finally:
            gc.enable()
    finally:
        for channel in channels:
            await channel.close()
    return _report(plan, tally)


def _report(plan: Plan, tally: _Tally) -> dict[str, Any]:
    latencies = sorted(tally.latencies)
    cpu = tally.cpu_at_end - tally.cpu_at_start
    return {
        "target": plan.target,
        "method": plan.method,
        "concurrency": plan.concurrency,
        "channels": plan.channels,
        "seconds": plan.seconds,
        "requests": len(latencies),
        "rps": len(latencies) / plan.seconds,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p90_ms": percentile(latencies, 90) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "max_ms": (latencies[-1] if latencies else 0.0) * 1000,
        "errors": dict(tally.errors),
        "cpu_seconds": round(cpu, 3),
        "busy_pct": round(100 * cpu / plan.seconds, 1),
    }


def _loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    if name == "uvloop":
        import uvloop  # noqa: PLC0415 - only when chosen

        factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
        return factory
    return asyncio.new_event_loop


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.grpcload", description=__doc__.split("\n\n", 1)[0]
    )
    parser.add_argument("target", help="host:port, plaintext")
    parser.add_argument("seconds", type=float, help="measured seconds")
    parser.add_argument(
        "--token",
        default=os.environ.get(TOKEN_ENV, ""),
        help=f"the `authorization` metadata value (default: ${TOKEN_ENV}, kept out of ps)",
    )
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds first")
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY)
    parser.add_argument("--channels", type=int, default=DEFAULT_CHANNELS)
    parser.add_argument("--method", default=GET_CREDENTIALS)
    parser.add_argument("--timeout", type=float, default=REQUEST_TIMEOUT.total_seconds())
    parser.add_argument(
        "--loop",
        choices=("uvloop", "asyncio"),
        default="uvloop",
        help="event loop (default uvloop: ~5 points less CPU than asyncio's for the same rate)",
    )
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.warmup < 0 or args.concurrency < 1 or args.channels < 1:
        parser.error("seconds, concurrency and channels must be positive, warmup not negative")
    plan = Plan(
        target=args.target,
        method=args.method,
        request=b"",
        metadata=(("authorization", args.token),) if args.token else (),
        seconds=args.seconds,
        warmup=args.warmup,
        concurrency=args.concurrency,
        channels=min(args.channels, args.concurrency),
        timeout=args.timeout,
    )
    try:
        with asyncio.Runner(loop_factory=_loop_factory(args.loop)) as runner:
            report = runner.run(run(plan))
    except grpc.aio.AioRpcError as exc:
        print(f"error: the probe call failed: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
