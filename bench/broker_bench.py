"""The broker's figures: vending cached credentials, and the cold exchange behind a new sandbox.

vend                  req/s of GET /v1/credentials on the sandbox listener (sandbox token in
                      Authorization, session cached) ÷ req/s of the bare app, GET with the same
                      header. Every vend appends an fsynced audit record (group commit) by design.
vend p99 @ half load  p99 latency at half the measured vend rate, held by the open-loop
                      generator (latency from each request's due time).
grpc GetCredentials   RPC/s of warrant.v1.CredentialBroker/GetCredentials (sandbox token in the
                      `authorization` metadata, session cached) ÷ RPC/s of the bare gRPC server
                      (bench.bare_grpc, a fixed answer), both loaded by bench.grpcload; the HTTP
                      vend req/s of the same session is shown beside it.
cold                  median of POST /v1/sandboxes on fresh integrations (the broker mints, calls
                      AssumeRoleWithWebIdentity at the stand-in, stores the sandbox, audits)
                      minus the median of the same exchange done directly (POST /v1/tokens, then
                      AssumeRoleWithWebIdentity with boto3): what the broker adds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import grpc
import httpx
from botocore.exceptions import BotoCoreError, ClientError

from bench.cpustat import Interference
from bench.errors import BenchError
from bench.grpcload import GET_CREDENTIALS
from bench.latency import LatencyRun
from bench.loadgen import GrpcCall, HttpRequest, LoadResult
from bench.registry import Benchmark, Session
from bench.report import Figure
from bench.servers import Warrant
from bench.world import BrokerWorld, IntegrationRef, checked
from broker.rpc.v1 import credential_broker_pb2 as pb
from broker.rpc.v1 import credential_broker_pb2_grpc as pb_grpc

__all__ = ["BENCHMARKS"]

VEND_TARGET = 0.8  # vend ÷ bare GET
VEND_P99_TARGET_MS = 5.0  # at half the measured vend rate
COLD_TARGET_MS = 2.0  # median cold exchange - median direct exchange
COLD_SAMPLES = 30  # fresh integrations (each with its own role) per attempt
GRPC_TARGET = 0.8  # GetCredentials ÷ bare gRPC: our own target, the same as HTTP vend's
VEND_RUN = "vend"  # the HTTP vend load run, shown beside the gRPC figure
WARM_CALL_TIMEOUT = timedelta(seconds=10)


def vend(session: Session) -> list[Figure]:
    world = session.broker()
    warrant = world.warrant
    ref = world.integration("vend")
    token = _sandbox_token(world, ref)
    # One vend first: the sandbox's authentication and the integration are then cached too.
    credentials = checked(warrant, "GET /v1/credentials", world.vend(token), 200)
    if not str(credentials.get("AccessKeyId", "")).startswith("ASIA"):
        raise BenchError(f"GET /v1/credentials answered without credentials: {list(credentials)}")
    request = HttpRequest(warrant.sandbox_url, headers={"Authorization": token})
    bare = session.baseline(request, name="bare GET +Authorization")
    run = session.load(VEND_RUN, request, warrant.server)
    throughput = Figure(
        name="vend",
        measured=run.requests_per_second,
        baseline=bare.requests_per_second,
        baseline_label="bare GET",
        target=VEND_TARGET,
        errors=run.errors + bare.errors,
        others_pct=_worst(run.interference, bare.interference),
        note=(
            "GET /v1/credentials on the sandbox listener, cache hit, sandbox token as the raw "
            "Authorization value; the bare app gets a GET with the same header. Each vend "
            "durably appends an audit record (fsync, group commit) before answering"
        ),
    )
    rate = run.requests_per_second / 2
    if rate < 1:
        raise BenchError(f"vend measured {run.requests_per_second:.1f} req/s; no half load to hold")
    half = session.load_at_rate("vend @ half load", request, rate, warrant.server)
    generator = half.generator or {}
    latency = Figure(
        name="vend p99 @ half load",
        measured=half.p99_ms,
        baseline=rate,
        baseline_label="offered, open loop",
        target=VEND_P99_TARGET_MS,
        errors=half.errors,
        others_pct=_worst(half.interference),
        unit="ms",
        baseline_unit="req/s",
        upper_bound=True,
        detail=f"p50 {half.p50_ms:.2f} ms",
        note=(
            f"{rate:,.0f} req/s offered (half of {run.requests_per_second:,.0f}) by "
            f"bench.openloop on {half.connections} keep-alive connections, latency from each "
            f"request's due time; completed {half.requests_per_second:,.0f} req/s, p90 "
            f"{half.p90_ms:.2f} ms, max {generator.get('max_ms', 0.0):.2f} ms; generator send "
            f"lag p99 {generator.get('send_lag_p99_ms', 0.0):.3f} ms, "
            f"{generator.get('queued', 0.0):,.0f} requests found every connection busy"
        ),
    )
    return [throughput, latency]


def grpc_vend(session: Session) -> list[Figure]:
    world = session.broker()
    warrant = world.warrant
    token = _sandbox_token(world, world.integration("grpc"))
    # One call first, as for vend: the sandbox's authentication and the integration are cached.
    credentials = _get_credentials(warrant, token)
    if not credentials.access_key_id.startswith("ASIA"):
        raise BenchError("GetCredentials answered without credentials")
    call = GrpcCall(warrant.grpc_target, GET_CREDENTIALS, authorization=token)
    bare = session.grpc_baseline(call, name="bare gRPC +authorization")
    run = session.load_grpc("grpc GetCredentials", call, warrant.server)
    return [
        Figure(
            name="grpc GetCredentials",
            measured=run.requests_per_second,
            baseline=bare.requests_per_second,
            baseline_label="bare gRPC",
            target=GRPC_TARGET,
            errors=run.errors + bare.errors,
            others_pct=_worst(run.interference, bare.interference),
            note=_grpc_note(run, bare, _run_named(session, VEND_RUN)),
        )
    ]


def _grpc_note(run: LoadResult, bare: LoadResult, http: LoadResult | None) -> str:
    generator, bare_generator = run.generator or {}, bare.generator or {}
    beside = (
        f"HTTP vend in this run: {http.requests_per_second:,.0f} req/s (GET /v1/credentials, "
        f"wrk), so gRPC serves {run.requests_per_second / http.requests_per_second:.2f}x "
        "the HTTP rate"
        if http is not None and http.requests_per_second > 0
        else "HTTP vend not measured in this run (add vend: --only vend,grpc)"
    )
    return (
        f"{beside}. warrant.v1.CredentialBroker/GetCredentials on the gRPC listener, cache "
        "hit, sandbox token as the `authorization` metadata; the bare server "
        "(bench.bare_grpc: grpc.aio on uvloop with Warrant's server options) answers a fixed "
        "Credentials message and reads nothing. Each call durably appends an audit record, as "
        f"a vend does. Target {GRPC_TARGET:g} is our own, as for HTTP vend. Load: "
        f"bench.grpcload (grpc.aio, closed loop) pinned to the wrk CPU, "
        f"{generator.get('concurrency', 0):g} calls in flight on "
        f"{generator.get('channels', 0):g} channels; generator busy "
        f"{generator.get('busy_pct', 0.0):g}% of its CPU against Warrant, "
        f"{bare_generator.get('busy_pct', 0.0):g}% against the bare server (near 100: the "
        "generator, not the server, set the rate)"
    )


def _run_named(session: Session, name: str) -> LoadResult | None:
    return next((run for run in session.runs if run.name == name), None)


def _get_credentials(warrant: Warrant, token: str) -> pb.Credentials:
    """One GetCredentials call over a fresh channel; BenchError (with the server's stderr) when
    it fails."""
    with grpc.insecure_channel(warrant.grpc_target) as channel:
        try:
            answer: pb.Credentials = pb_grpc.CredentialBrokerStub(channel).GetCredentials(
                pb.GetCredentialsRequest(),
                metadata=(("authorization", token),),
                timeout=WARM_CALL_TIMEOUT.total_seconds(),
            )
        except grpc.RpcError as exc:
            raise BenchError(
                f"GetCredentials at {warrant.grpc_target} failed: {exc.code().name}: "
                f"{exc.details()}\n"
                f"{warrant.server.stderr_tail()}"
            ) from exc
    return answer


@dataclass
class _ColdRound:
    """One attempt's fresh integrations, and the stand-in's exchange count before timing."""

    fresh: list[IntegrationRef]
    exchanges_before: int


def cold(session: Session) -> list[Figure]:
    world = session.broker()
    warrant = world.warrant

    def prepare() -> _ColdRound:
        warmup, *fresh = [world.integration("cold") for _ in range(COLD_SAMPLES + 1)]
        # Unmeasured: the broker's STS client, our boto3 client and connections, and the
        # stand-in's cache of the issuer's discovery document and JWKS (max-age) all warm up.
        for timed in (_time_cold, _time_direct):
            outcome = timed(world, warmup)
            if isinstance(outcome, str):
                raise BenchError(f"cold warm-up failed: {outcome}\n{warrant.server.stderr_tail()}")
        return _ColdRound(fresh, world.exchanges())

    def measure(round_: _ColdRound) -> list[LatencyRun]:
        timings: dict[str, list[float]] = {"cold": [], "direct": []}
        errors = {"cold": 0, "direct": 0}
        failures: list[str] = []
        steps: dict[str, Callable[[BrokerWorld, IntegrationRef], float | str]] = {
            "cold": _time_cold,
            "direct": _time_direct,
        }
        for index, ref in enumerate(round_.fresh):
            # Alternate which goes first, so neither always follows the other.
            for kind in ("cold", "direct") if index % 2 == 0 else ("direct", "cold"):
                outcome = steps[kind](world, ref)
                if isinstance(outcome, str):
                    errors[kind] += 1
                    failures.append(f"{kind} {ref.name}: {outcome}")
                else:
                    timings[kind].append(outcome)
        for failure in failures[:3]:
            session.progress(f"  failed: {failure}")
        exchanged = world.exchanges() - round_.exchanges_before
        expected = len(timings["cold"]) + len(timings["direct"])
        if exchanged != expected:
            raise BenchError(
                f"the stand-in counted {exchanged} successful exchanges, expected {expected}: "
                "a cold sandbox did not exchange (served from a cache?)"
            )
        return [
            LatencyRun(
                "cold",
                "POST /v1/sandboxes, fresh integration",
                timings["cold"],
                errors["cold"],
            ),
            LatencyRun(
                "direct STS exchange",
                "POST /v1/tokens + AssumeRoleWithWebIdentity (boto3)",
                timings["direct"],
                errors["direct"],
            ),
        ]

    cold_run, direct = session.latency("cold", warrant.server, prepare, measure)
    added = cold_run.median_ms - direct.median_ms
    return [
        Figure(
            name="cold (broker-added)",
            measured=added,
            baseline=direct.median_ms,
            baseline_label="direct exchange, median",
            target=COLD_TARGET_MS,
            errors=cold_run.errors + direct.errors,
            others_pct=_worst(cold_run.interference),
            unit="ms",
            upper_bound=True,
            detail=f"cold {cold_run.median_ms:.2f} ms",
            note=(
                f"median cold POST /v1/sandboxes {cold_run.median_ms:.2f} ms (p90 "
                f"{cold_run.p90_ms:.2f}) minus median direct exchange {direct.median_ms:.2f} ms "
                f"(p90 {direct.p90_ms:.2f}), {cold_run.count} fresh integrations, each with its "
                "own role, so nothing is cached. Direct = POST /v1/tokens (subject = the "
                "integration id) then AssumeRoleWithWebIdentity with boto3, unsigned, same role, "
                "session name and duration, at the stand-in: it includes one HTTP round trip "
                "the broker does not make, so the difference slightly understates. The cold "
                "path also inserts the sandbox row and durably writes three audit records "
                "(mint, exchange, sandbox.create; fsync, group commit; the sandbox's while STS "
                "answers) where the direct one writes one (mint). The stand-in's JWKS cache is "
                "warmed by an exchange first"
            ),
        )
    ]


def _time_cold(world: BrokerWorld, ref: IntegrationRef) -> float | str:
    """Milliseconds of POST /v1/sandboxes, or what went wrong."""
    start = time.perf_counter()
    try:
        response = world.create_sandbox(ref)
    except httpx.HTTPError as exc:
        return f"POST /v1/sandboxes: {exc}"
    elapsed = time.perf_counter() - start
    if response.status_code != 201:
        return f"POST /v1/sandboxes answered {response.status_code}: {response.text[:300]}"
    return elapsed * 1000


def _time_direct(world: BrokerWorld, ref: IntegrationRef) -> float | str:
    """Milliseconds of minting the integration's token and exchanging it at the stand-in."""
    start = time.perf_counter()
    try:
        response = world.mint(ref)
        if response.status_code != 200:
            return f"POST /v1/tokens answered {response.status_code}: {response.text[:300]}"
        answer = world.assume(ref, response.json()["token"])
    except httpx.HTTPError as exc:
        return f"POST /v1/tokens: {exc}"
    except (ClientError, BotoCoreError) as exc:
        return f"AssumeRoleWithWebIdentity: {exc}"
    elapsed = time.perf_counter() - start
    if not str(answer.get("Credentials", {}).get("AccessKeyId", "")).startswith("ASIA"):
        return "AssumeRoleWithWebIdentity answered without credentials"
    return elapsed * 1000


def _sandbox_token(world: BrokerWorld, ref: IntegrationRef) -> str:
    grant = checked(world.warrant, "POST /v1/sandboxes", world.create_sandbox(ref), 201)
    token = grant.get("env", {}).get("AWS_CONTAINER_AUTHORIZATION_TOKEN")
    if not isinstance(token, str):
        raise BenchError("POST /v1/sandboxes answered without a sandbox token")
    return token


def _worst(*noise: Interference | None) -> float:
    return max((n.worst_pct for n in noise if n is not None), default=0.0)


BENCHMARKS = (
    Benchmark(
        "vend",
        "GET /v1/credentials (cached) ÷ the bare app; p99 at half that rate (open loop)",
        vend,
    ),
    Benchmark(
        "grpc",
        "GetCredentials RPC (cached) ÷ the bare gRPC server, beside the HTTP vend req/s",
        grpc_vend,
    ),
    Benchmark(
        "cold",
        "POST /v1/sandboxes on fresh integrations minus a direct mint + STS exchange (medians)",
        cold,
    ),
)
