"""The broker at scale: one STS call for a thousand cold requests, and memory with 100,000 live
sandboxes and 10,000 cached sessions.

stampede  1,000 concurrent POST /v1/sandboxes on one fresh integration (nothing cached): the
          stand-in must count exactly one AssumeRoleWithWebIdentity. The stand-in holds that one
          exchange for STAMPEDE_HOLD (its `slow` fault), so every request reaches the cache while
          the session is still cold and in flight; the cache's miss counter shows how many did.
memory    VmRSS of a fresh `warrant serve` holding 100,000 live sandboxes, 10,000 cached
          sessions (9,999 sandboxes with a session policy of their own, each its own cache scope,
          plus the integration's shared session), after one vend of every sandbox; beside its
          own RSS right after start. The sessions are exchanged at bench.quick_sts (see there:
          the stand-in takes minutes for 10,000), the 90,000 other sandboxes written with SQL.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import create_engine, func, insert, select

from bench.burst import Burst, post_all
from bench.cpustat import CpuMeter, Interference
from bench.errors import BenchError
from bench.loadgen import HttpRequest, LoadResult
from bench.machine import pinned
from bench.quick_sts import QuickSts
from bench.registry import Benchmark, Session
from bench.report import Figure
from bench.world import TENANT, BrokerWorld, CacheCounters, IntegrationRef, checked
from broker.sandboxes import ID_PREFIX, TOKEN_PREFIX, SandboxRow, hash_token
from broker.settings import DEFAULT_SANDBOX_TTL, SANDBOX_AUTH_CACHE_TTL

__all__ = ["BENCHMARKS"]

T = TypeVar("T")

STAMPEDE_REQUESTS = 1_000
STAMPEDE_TARGET = 1  # STS calls
# Below the broker's 5 s STS read timeout (a timeout would retry: a second call), above the time
# a thousand sandbox inserts take to reach the cache on one CPU.
STAMPEDE_HOLD = timedelta(seconds=3)

MEMORY_SANDBOXES = 100_000
MEMORY_SESSIONS = 10_000  # the session cache's bound (broker.cache.MAXSIZE): full, no eviction
RSS_TARGET_MB = 300.0
# Sandboxes created through the API at once (each one STS call at the stand-in).
CREATE_IN_FLIGHT = 32
INSERT_BATCH = 10_000
# A narrowing policy: each sandbox created with one gets a session (cache scope) of its own.
NARROW_POLICY = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}],
    },
    separators=(",", ":"),
)
TOKEN_BYTES = 32  # as broker.sandboxes: 43 characters of base64url after the prefix
ID_BYTES = 10
BYTES_PER_KB = 1024
BYTES_PER_MB = 1_000_000


def stampede(session: Session) -> list[Figure]:
    world = session.broker()
    ref = world.integration("stampede")
    calls, counters = world.exchange_calls(), world.cache_counters()
    url, body, headers = world.sandbox_call(ref)
    session.progress(
        f"stampede: {STAMPEDE_REQUESTS:,} concurrent POST /v1/sandboxes on fresh integration "
        f"{ref.name}, the one exchange held {STAMPEDE_HOLD.total_seconds():g} s at the stand-in"
    )
    world.slow_exchanges(STAMPEDE_HOLD, count=1)
    try:
        burst, noise = _metered(
            session,
            world,
            lambda: post_all(url, [body] * STAMPEDE_REQUESTS, headers, in_flight=STAMPEDE_REQUESTS),
        )
    finally:
        world.clear_faults()
    sts_calls = world.exchange_calls() - calls
    after = world.cache_counters()
    cold, hits = after.misses - counters.misses, after.hits - counters.hits
    failures = burst.failures(201)
    for failure in failures[:3]:
        session.progress(f"  failed: {failure}")
    session.progress(
        f"  {burst.count(201):,} sandboxes in {burst.seconds:.2f} s; {sts_calls} STS call(s); "
        f"{cold:,} requests found the session cold, {hits:,} cached"
    )
    return [
        Figure(
            name=f"STS calls, {STAMPEDE_REQUESTS:,} cold requests",
            measured=sts_calls,
            baseline=STAMPEDE_REQUESTS,
            baseline_label="concurrent POST /v1/sandboxes",
            baseline_unit="requests",
            unit="STS calls",
            target=STAMPEDE_TARGET,
            upper_bound=True,
            errors=len(failures),
            others_pct=noise.worst_pct if noise else 0.0,
            detail=f"{cold:,} arrived cold",
            note=(
                f"{STAMPEDE_REQUESTS:,} POST /v1/sandboxes (container delivery) on one fresh "
                f"integration, all sent at once over {STAMPEDE_REQUESTS:,} connections (asyncio + "
                f"httpx, bench.burst); {burst.count(201):,} answered 201 in "
                f"{burst.seconds:.2f} s. The stand-in held the one exchange "
                f"{STAMPEDE_HOLD.total_seconds():g} s (its slow fault), so the requests reach "
                f"the cache while the session is cold: {cold:,} waited on the in-flight "
                f"exchange (cache misses), {hits:,} were served from the cache. STS calls = "
                "AssumeRoleWithWebIdentity calls counted by the stand-in, any outcome"
            ),
        )
    ]


def _metered(
    session: Session, world: BrokerWorld, measure: Callable[[], T]
) -> tuple[T, Interference | None]:
    """`measure()` on the load-generator CPU, with others' use of both CPUs meanwhile."""
    cpus = session.cpus
    server = world.warrant.server
    meter = CpuMeter(server.process.pid, cpus.server, cpus.loadgen, loadgen_pid=os.getpid())
    with pinned(cpus.loadgen):
        meter.start()
        result = measure()
        noise = meter.stop()
    server.check_alive()
    return result, noise


@dataclass(frozen=True, slots=True)
class _Memory:
    rss_mb: float
    peak_mb: float  # VmHWM: the most it has held


def _memory(pid: int) -> _Memory:
    fields: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) * BYTES_PER_KB / BYTES_PER_MB
    return _Memory(fields["VmRSS"], fields["VmHWM"])


@dataclass
class _Steps:
    """What the memory benchmark did, in order, for its note."""

    lines: list[str]

    def timed(self, what: str, action: Callable[[], T], session: Session) -> T:
        session.progress(f"memory: {what} ...")
        start = time.perf_counter()
        result = action()
        seconds = time.perf_counter() - start
        self.lines.append(f"{what}: {seconds:.1f} s")
        session.progress(f"  {seconds:.1f} s")
        return result


@dataclass(frozen=True, slots=True)
class _MemoryRun:
    idle: _Memory  # right after start
    loaded: _Memory  # after the set-up and the vend pass
    counters: CacheCounters
    live: int  # live sandboxes in the database
    sts_calls: int  # for the sessions
    steps: _Steps
    vends: LoadResult


def memory(session: Session) -> list[Figure]:
    with contextlib.ExitStack() as stack:
        with pinned(session.cpus.loadgen):  # its thread stays on the load-generator CPU
            sts = stack.enter_context(QuickSts())
        world = stack.enter_context(session.fresh_broker("memory", sts_endpoint=sts.endpoint_url))
        pid = world.warrant.server.process.pid
        idle = _memory(pid)
        session.progress(
            f"memory: fresh server exchanging at bench.quick_sts ({sts.endpoint_url}), "
            f"RSS {idle.rss_mb:.1f} MB idle after start"
        )
        world.setup(iam=False)
        ref = world.integration("memory", role=False)
        steps = _Steps([])
        calls = world.exchange_calls()
        tokens = [_token(checked(world.warrant, "sandbox", world.create_sandbox(ref), 201))]
        tokens += steps.timed(
            f"{MEMORY_SESSIONS - 1:,} sandboxes with their own session policy via POST "
            f"/v1/sandboxes, {CREATE_IN_FLIGHT} in flight",
            lambda: _narrowed_sandboxes(world, ref, MEMORY_SESSIONS - 1),
            session,
        )
        sts_calls = world.exchange_calls() - calls
        tokens += steps.timed(
            f"{MEMORY_SANDBOXES - MEMORY_SESSIONS:,} more sandboxes inserted with SQL",
            lambda: _insert_sandboxes(world, ref, MEMORY_SANDBOXES - MEMORY_SESSIONS),
            session,
        )
        random.Random(0).shuffle(tokens)  # noqa: S311 - an order, not a secret
        vends = session.load_each(
            "vend every sandbox",
            HttpRequest(world.warrant.sandbox_url),
            "Authorization",
            tokens,
            world.warrant.server,
        )
        run = _MemoryRun(
            idle=idle,
            loaded=_memory(pid),
            counters=world.cache_counters(),
            live=_live_sandboxes(world.warrant.data_dir / "warrant.db"),
            sts_calls=sts_calls,
            steps=steps,
            vends=vends,
        )
    _check_world(run.live, run.counters)
    return [_memory_figure(run)]


def _memory_figure(run: _MemoryRun) -> Figure:
    auth_ttl = SANDBOX_AUTH_CACHE_TTL.total_seconds()
    vends, counters = run.vends, run.counters
    return Figure(
        name=f"RSS, {run.live // 1000:,}k sandboxes + {counters.size // 1000:,}k sessions",
        measured=run.loaded.rss_mb,
        baseline=run.idle.rss_mb,
        baseline_label="idle, after start",
        target=RSS_TARGET_MB,
        unit="MB",
        upper_bound=True,
        errors=vends.errors,
        others_pct=vends.interference.worst_pct if vends.interference else 0.0,
        detail=f"peak {run.loaded.peak_mb:.1f} MB",
        note=(
            f"VmRSS of a fresh warrant serve (SQLite) after: {'; '.join(run.steps.lines)} "
            f"({run.sts_calls:,} AssumeRoleWithWebIdentity calls, answered by bench.quick_sts: "
            "real broker path, no token verification, far faster than the stand-in); then one "
            "vend of "
            f"each of the {run.live:,} live sandboxes in random order (wrk, "
            f"{vends.requests:,} requests, {vends.requests_per_second:,.0f} req/s). Read right "
            f"after that pass: {counters.size:,} sessions cached ({counters.evictions} "
            f"evicted), VmHWM (peak) {run.loaded.peak_mb:.1f} MB. 1 MB = 10^6 bytes. Sandbox "
            f"authentications are cached {auth_ttl:g} s (broker.settings), so only the last "
            f"{auth_ttl:g} s of vends are held at the reading; the index of sandbox ids to "
            "token hashes behind that cache holds all of them"
        ),
    )


def _check_world(live: int, counters: CacheCounters) -> None:
    if live != MEMORY_SANDBOXES:
        raise BenchError(
            f"memory: {live:,} live sandboxes in the database, expected {MEMORY_SANDBOXES:,}"
        )
    if counters.size != MEMORY_SESSIONS:
        raise BenchError(
            f"memory: the broker caches {counters.size:,} sessions, expected {MEMORY_SESSIONS:,}"
        )


def _token(grant: dict[str, Any]) -> str:
    token = grant.get("env", {}).get("AWS_CONTAINER_AUTHORIZATION_TOKEN")
    if not isinstance(token, str):
        raise BenchError("POST /v1/sandboxes answered without a sandbox token")
    return token


def _narrowed_sandboxes(world: BrokerWorld, ref: IntegrationRef, count: int) -> list[str]:
    """`count` sandboxes on `ref`, each with NARROW_POLICY: a cached session each."""
    url, body, headers = world.sandbox_call(ref, session_policy=NARROW_POLICY)
    burst: Burst = post_all(url, [body] * count, headers, in_flight=CREATE_IN_FLIGHT)
    failures = burst.failures(201)
    if failures:
        raise BenchError(
            f"memory: {len(failures):,} of {count:,} sandboxes failed, e.g. {failures[0]}\n"
            f"{world.warrant.server.stderr_tail()}"
        )
    return [_token(dict(answer.body)) for answer in burst.answers]


def _insert_sandboxes(world: BrokerWorld, ref: IntegrationRef, count: int) -> list[str]:
    """`count` live container sandboxes of `ref` (no policy of their own: they share the
    integration's session) written straight into the server's SQLite database as
    broker.sandboxes.SqlSandboxStore writes them (same table, token stored as its SHA-256);
    their tokens."""
    now = datetime.now(UTC)
    tokens = [TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES) for _ in range(count)]
    rows = [
        {
            "id": ID_PREFIX + secrets.token_hex(ID_BYTES),
            "tenant": TENANT,
            "integration_id": ref.id,
            "delivery": "container",
            "session_policy": None,
            "token_hash": hash_token(token),
            "created_at": now,
            "expires_at": now + DEFAULT_SANDBOX_TTL,
            "revoked_at": None,
        }
        for token in tokens
    ]
    engine = create_engine(f"sqlite:///{world.warrant.data_dir / 'warrant.db'}")
    try:
        with engine.begin() as connection:
            for start in range(0, count, INSERT_BATCH):
                connection.execute(insert(SandboxRow), rows[start : start + INSERT_BATCH])
    finally:
        engine.dispose()
    return tokens


def _live_sandboxes(database: Path) -> int:
    engine = create_engine(f"sqlite:///{database}")
    try:
        with engine.connect() as connection:
            count = connection.scalar(
                select(func.count())
                .select_from(SandboxRow)
                .where(SandboxRow.revoked_at.is_(None), SandboxRow.expires_at > datetime.now(UTC))
            )
    finally:
        engine.dispose()
    return int(count or 0)


BENCHMARKS = (
    Benchmark(
        "stampede",
        f"STS calls for {STAMPEDE_REQUESTS:,} concurrent cold sandboxes of one integration (1)",
        stampede,
    ),
    Benchmark(
        "memory",
        f"RSS with {MEMORY_SANDBOXES:,} live sandboxes and {MEMORY_SESSIONS:,} cached sessions",
        memory,
    ),
)
