"""An open-loop load generator: requests at a fixed rate, whatever the server's latency.

wrk is closed-loop: each connection sends its next request when the previous answer arrives, so
it measures the maximum rate and cannot hold a given one, and a slow answer delays the requests
behind it instead of showing up in their latency (coordinated omission). wrk2 fixes that, but it
is not packaged in Debian; this is the same idea in a few hundred lines.

    python -m bench.openloop URL RATE DURATION [HEADER ...] [--warmup S] [--connections N]

Request i is due at start + i/RATE. It goes out on the first idle keep-alive connection (FIFO,
so every connection stays warm); when all are busy it waits for one, and that wait counts. Its
latency runs from the time it was *due* to the end of its response, so a server that falls
behind is charged for every request it delays. Between due times it sleeps in select(2), whose
timeout has microseconds (epoll's has milliseconds: sends would be up to 1 ms late), with the
timer slack cut to 1 us; it does not spin, which on a VM would invite the host to preempt it.
One JSON object is printed on stdout; `send_lag_*` (sent minus due) and `busy_pct` (share of
the time not spent waiting; near 100 the generator is the bottleneck) show whether it kept up.

`bench.loadgen.OpenLoop` runs it from the harness, pinned to the load-generator CPU. It imports
nothing from the harness, so it starts fast and stays small.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import math
import re
import select
import socket
import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

__all__ = ["Target", "generate", "main", "percentile"]

DEFAULT_CONNECTIONS = 32
# As wrk's --timeout: a response slower than this (from its send) is a timeout, not a sample.
REQUEST_TIMEOUT = timedelta(seconds=2)
# prctl(2): how late the kernel may fire our timers (default 50 us); we want them on time.
PR_SET_TIMERSLACK = 29
TIMER_SLACK_NS = 1_000
# How often in-flight requests are checked against REQUEST_TIMEOUT.
SWEEP_EVERY = 0.01
CONNECT_TIMEOUT = 2.0
RECV_BYTES = 65_536
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)")
_CLOSE = re.compile(rb"\r\nconnection:[ \t]*close")


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of already sorted values; 0.0 when there are none."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(pct * len(sorted_values) / 100))
    return sorted_values[rank - 1]


class ProtocolError(Exception):
    """A response this client cannot read (no Content-Length: chunked bodies are unsupported)."""


@dataclass(frozen=True, slots=True)
class Target:
    host: str
    port: int
    request: bytes  # the bytes sent for every request

    @classmethod
    def parse(cls, url: str, headers: Sequence[str]) -> Target:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"{url!r}: only http:// URLs are supported")
        port = parts.port or 80
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        lines = [f"GET {path} HTTP/1.1", f"Host: {parts.hostname}:{port}"]
        for header in headers:
            name, sep, value = header.partition(":")
            if not sep or not name.strip():
                raise ValueError(f"header {header!r} is not 'Name: value'")
            lines.append(f"{name.strip()}: {value.strip()}")
        text = "\r\n".join(lines) + "\r\n\r\n"
        return cls(parts.hostname, port, text.encode("latin-1"))


@dataclass(eq=False, slots=True)
class _Conn:
    sock: socket.socket
    buffer: bytearray = field(default_factory=bytearray)
    busy: bool = False
    due: float = 0.0  # when the request in flight was due
    sent: float = 0.0


@dataclass
class _Tally:
    """What happened to the requests due inside the measured window."""

    latencies: list[float] = field(default_factory=list)
    dues: list[float] = field(default_factory=list)  # perf_counter due time of each latency
    send_lags: list[float] = field(default_factory=list)
    bad_status: int = 0
    errors: dict[str, int] = field(
        default_factory=lambda: {"connect": 0, "read": 0, "write": 0, "timeout": 0}
    )
    queued: int = 0  # due while every connection was busy


class _Generator:
    def __init__(self, target: Target, connections: int, timeout: float) -> None:
        self._target = target
        self._timeout = timeout
        self._by_fd: dict[int, _Conn] = {}
        self._conns = [self._open() for _ in range(connections)]
        self._idle: deque[_Conn] = deque(self._conns)
        self._measure_from = math.inf
        self.tally = _Tally()
        # Time spent waiting in select(2): 1 - idle/wall is how busy the generator was; near
        # 100% it is the bottleneck, and the latencies are its own.
        self.idle_seconds = 0.0
        self.wall_seconds = 0.0

    def _open(self) -> _Conn:
        sock = socket.create_connection(
            (self._target.host, self._target.port), timeout=CONNECT_TIMEOUT
        )
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        conn = _Conn(sock)
        self._by_fd[sock.fileno()] = conn
        return conn

    def _reopen(self, conn: _Conn) -> None:
        """Replace a closed or broken connection in place; it becomes idle."""
        del self._by_fd[conn.sock.fileno()]
        conn.sock.close()
        conn.buffer.clear()
        conn.busy = False
        try:
            sock = socket.create_connection(
                (self._target.host, self._target.port), timeout=CONNECT_TIMEOUT
            )
        except OSError:
            self._count("connect", conn.due)
            raise
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        conn.sock = sock
        self._by_fd[sock.fileno()] = conn

    def _count(self, kind: str, due: float) -> None:
        if due >= self._measure_from:
            self.tally.errors[kind] += 1

    def run(self, rate: float, duration: float, warmup: float) -> float:
        """Send every due request, wait for the last answers; returns the measured seconds."""
        interval = 1.0 / rate
        total = round((warmup + duration) * rate)
        start = time.perf_counter() + 0.01
        self._measure_from = start + warmup
        measured_until = start + (warmup + duration)
        hard_stop = start + total * interval + self._timeout + 1.0
        backlog: deque[float] = deque()
        next_index, last_sweep = 0, start
        while True:
            now = time.perf_counter()
            while next_index < total:
                due = start + next_index * interval
                if due > now:
                    break
                if not self._idle and due >= self._measure_from:
                    self.tally.queued += 1
                backlog.append(due)
                next_index += 1
            while backlog and self._idle:
                self._send(self._idle.popleft(), backlog.popleft())
            if next_index >= total and not backlog and len(self._idle) == len(self._conns):
                break
            if now > hard_stop:
                for conn in self._conns:
                    if conn.busy:
                        self._count("timeout", conn.due)
                break
            if now - last_sweep > SWEEP_EVERY:
                self._sweep(now)
                last_sweep = now
            wait = (start + next_index * interval - now) if next_index < total else SWEEP_EVERY
            # select(2), not epoll: its timeout has microseconds, epoll's only milliseconds,
            # which would make sends up to 1 ms late. 32 descriptors cost nothing to scan.
            before = time.perf_counter()
            readable, _, _ = select.select(list(self._by_fd), [], [], max(0.0, wait))
            self.idle_seconds += time.perf_counter() - before
            for fd in readable:
                if (ready := self._by_fd.get(fd)) is not None:
                    self._read(ready)
        self.wall_seconds = time.perf_counter() - start
        return measured_until - self._measure_from

    def _send(self, conn: _Conn, due: float) -> None:
        conn.busy, conn.due = True, due
        conn.sent = time.perf_counter()
        try:
            sent = conn.sock.send(self._target.request)
        except OSError:
            sent = -1
        if sent != len(self._target.request):
            self._count("write", due)
            self._reopen(conn)
            self._idle.append(conn)
            return
        if due >= self._measure_from:
            self.tally.send_lags.append(conn.sent - due)

    def _read(self, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(RECV_BYTES)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # closed by the server: an error only with a request in flight
            if conn.busy:
                self._count("read", conn.due)
            self._reopen(conn)
            self._idle.append(conn)
            return
        if not conn.busy:
            return  # nothing was asked on this connection; ignore stray bytes
        conn.buffer += data
        parsed = _response(conn.buffer)
        if parsed is None:
            return
        done = time.perf_counter()
        status, length, close = parsed
        if conn.due >= self._measure_from:
            self.tally.latencies.append(done - conn.due)
            self.tally.dues.append(conn.due)
            if status > 399:
                self.tally.bad_status += 1
        del conn.buffer[:length]
        conn.busy = False
        if close:
            self._reopen(conn)
        self._idle.append(conn)

    def _sweep(self, now: float) -> None:
        for conn in self._conns:
            if conn.busy and now - conn.sent > self._timeout:
                self._count("timeout", conn.due)
                self._reopen(conn)
                self._idle.append(conn)

    def close(self) -> None:
        for conn in self._conns:
            conn.sock.close()
        self._by_fd.clear()


def _response(buffer: bytearray) -> tuple[int, int, bool] | None:
    """(status, length, connection: close) of the first response in `buffer` once complete."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(buffer[:end]).lower()
    length = _CONTENT_LENGTH.search(head)
    if length is None:
        raise ProtocolError(f"response without Content-Length: {head[:200]!r}")
    total = end + 4 + int(length[1])
    if len(buffer) < total:
        return None
    return int(head[9:12]), total, _CLOSE.search(head) is not None


def _tight_timers() -> None:
    """Best effort: wake from select(2) within a microsecond of the due time, not 50."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_TIMERSLACK, TIMER_SLACK_NS, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def generate(
    target: Target,
    *,
    rate: float,
    duration: float,
    warmup: float,
    connections: int,
    timeout: float = REQUEST_TIMEOUT.total_seconds(),
    samples: Path | None = None,
) -> dict[str, Any]:
    """Run the load; the report as a JSON-ready dict (milliseconds). With `samples`, every
    measured request is also written there as 'due latency_ms', due in Unix time (to line up
    with the server's own logs)."""
    _tight_timers()
    generator = _Generator(target, connections, timeout)
    gc.disable()  # a collection pause would be charged to the server
    cpu_start = time.process_time()
    try:
        seconds = generator.run(rate, duration, warmup)
    finally:
        gc.enable()
        generator.close()
    tally = generator.tally
    if samples is not None:
        epoch = time.time() - time.perf_counter()
        pairs = zip(tally.dues, tally.latencies, strict=True)
        lines = (f"{epoch + due:.6f} {latency * 1000:.3f}\n" for due, latency in pairs)
        samples.write_text("".join(lines), encoding="ascii")
    latencies, lags = sorted(tally.latencies), sorted(tally.send_lags)
    return {
        "rate": rate,
        "connections": connections,
        "seconds": seconds,
        "completed": len(latencies),
        "rps": len(latencies) / seconds if seconds > 0 else 0.0,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p90_ms": percentile(latencies, 90) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "max_ms": (latencies[-1] if latencies else 0.0) * 1000,
        "bad_status": tally.bad_status,
        "socket_errors": tally.errors,
        "queued": tally.queued,
        "send_lag_p99_ms": percentile(lags, 99) * 1000,
        "send_lag_max_ms": (lags[-1] if lags else 0.0) * 1000,
        "cpu_seconds": time.process_time() - cpu_start,
        "busy_pct": round(100 * (1 - generator.idle_seconds / generator.wall_seconds), 1)
        if generator.wall_seconds > 0
        else 0.0,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.openloop", description=__doc__.split("\n\n", 1)[0]
    )
    parser.add_argument("url")
    parser.add_argument("rate", type=float, help="requests per second")
    parser.add_argument("duration", type=float, help="measured seconds")
    parser.add_argument("headers", nargs="*", metavar="HEADER", help="'Name: value'")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds first")
    parser.add_argument("--connections", type=int, default=DEFAULT_CONNECTIONS)
    parser.add_argument("--timeout", type=float, default=REQUEST_TIMEOUT.total_seconds())
    parser.add_argument(
        "--samples",
        metavar="PATH",
        help="also write each measured request as 'due_unix_time latency_ms' (to find stalls)",
    )
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.duration <= 0 or args.connections < 1:
        parser.error("rate, duration and connections must be positive")
    try:
        target = Target.parse(args.url, args.headers)
        report = generate(
            target,
            rate=args.rate,
            duration=args.duration,
            warmup=args.warmup,
            connections=args.connections,
            timeout=args.timeout,
            samples=None if args.samples is None else Path(args.samples),
        )
    except (ValueError, OSError, ProtocolError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
