"""One kind of the soak's mixed load, in a process of its own: `python -m bench.soak_load`.

The plan (a JSON object, `Plan.to_json`) arrives on stdin, so the API key and sandbox tokens it
carries never show in ps. Threads make paced requests (`rate` per second in all) until the time
is up, check every answer, and one JSON object is printed on stdout: per operation, requests,
errors by cause and latency; the first error messages; counters (tokens verified, JWKS fetches).

Kinds:
- `mint`: POST /v1/tokens (every fourth call gRPC MintToken), each token verified with PyJWT
  against the served JWKS cached per its max-age (bench.soak_verify);
- `vend`: GET /v1/credentials on the sandbox listener with long-lived sandboxes' tokens;
- `grpc`: gRPC GetCredentials with the same tokens;
- `churn`: a sandbox created (HTTP or gRPC, container or env delivery, some with a session
  policy of their own: a fresh STS exchange each), used once, deleted, and refused afterwards;
- `public`: discovery and JWKS, plain, conditional (If-None-Match -> 304) and HEAD.

Any non-2xx answer (except the expected 304 and the refusal after a delete), transport error,
wrong body or failed verification is an error.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import threading
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import grpc
import httpx

from bench.openloop import percentile
from bench.soak_verify import JwksCache, TokenRejected, verify_token
from broker.rpc.v1 import credential_broker_pb2 as pb
from broker.rpc.v1 import credential_broker_pb2_grpc as rpc

__all__ = ["KINDS", "Plan", "main"]

KINDS = ("mint", "vend", "grpc", "churn", "public")
# How many error messages a worker reports verbatim (the counts cover the rest).
MAX_SAMPLES = 5
# Behind schedule by more than this many intervals, a thread stops catching up: a soak keeps a
# steady load, it never bursts to make up for a slow patch.
MAX_LAG_INTERVALS = 5
PROGRESS_EVERY = timedelta(seconds=60)
# Kept tokens are verified again this long after minting: within their 60 s lifetime, and often
# after the key that signed them was retired.
REVERIFY_AFTER = timedelta(seconds=45)
# The session policy of churned sandboxes that get a session of their own.
SESSION_POLICY = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}],
    }
)


class Failed(Exception):
    """One operation failed; `reason` is the countable cause."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Plan:
    kind: str
    seconds: float
    rate: float  # requests (operations) per second, all threads together
    threads: int
    timeout: float  # per request
    issuer: str
    public_url: str
    internal_url: str
    sandbox_url: str
    grpc_target: str
    tenant: str
    audience: str
    agent_key: str = field(repr=False)
    credential_floor: float  # seconds a vended credential must have left at least
    integrations: tuple[str, ...] = ()
    sandbox_tokens: tuple[str, ...] = field(default=(), repr=False)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Plan:
        raw = json.loads(text)
        raw["integrations"] = tuple(raw["integrations"])
        raw["sandbox_tokens"] = tuple(raw["sandbox_tokens"])
        return cls(**raw)


class Tally:
    """What every thread of this worker saw; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: Counter[str] = Counter()
        self.errors: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self.latencies: defaultdict[str, list[float]] = defaultdict(list)
        self.counters: Counter[str] = Counter()
        self.samples: list[str] = []

    def ok(self, op: str, seconds: float) -> None:
        with self._lock:
            self.requests[op] += 1
            self.latencies[op].append(seconds)

    def failed(self, op: str, seconds: float, error: Failed) -> None:
        with self._lock:
            self.requests[op] += 1
            self.latencies[op].append(seconds)
            self.errors[op][error.reason] += 1
            if len(self.samples) < MAX_SAMPLES:
                self.samples.append(f"{op}: {error}"[:500])

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counters[name] += n

    def total(self) -> tuple[int, int]:
        with self._lock:
            return sum(self.requests.values()), sum(sum(c.values()) for c in self.errors.values())

    def report(self, plan: Plan) -> dict[str, Any]:
        with self._lock:
            ops = {}
            for op in sorted(self.requests):
                times = sorted(self.latencies[op])
                ops[op] = {
                    "requests": self.requests[op],
                    "errors": dict(self.errors[op]),
                    "p50_ms": round(percentile(times, 50) * 1000, 2),
                    "p99_ms": round(percentile(times, 99) * 1000, 2),
                    "max_ms": round((times[-1] if times else 0.0) * 1000, 2),
                }
            return {
                "kind": plan.kind,
                "seconds": plan.seconds,
                "rate": plan.rate,
                "threads": plan.threads,
                "ops": ops,
                "counters": dict(self.counters),
                "samples": list(self.samples),
            }


class Ops:
    """The operations of one thread: its own HTTP client, the process's gRPC channel."""

    def __init__(self, plan: Plan, tally: Tally, stub: rpc.CredentialBrokerStub, jwks: JwksCache):
        self.plan = plan
        self.tally = tally
        self.stub = stub
        self.jwks = jwks
        self.http = httpx.Client(timeout=plan.timeout)
        self.agent = {"Authorization": f"Bearer {plan.agent_key}"}
        self.agent_md = (("authorization", f"Bearer {plan.agent_key}"),)
        self.etag: str | None = None
        # Tokens kept to verify again later: (minted at, token, kid, subject), oldest first.
        self.later: deque[tuple[float, str, str, str]] = deque()

    def close(self) -> None:
        self.http.close()

    def timed(self, op: str, call: Callable[[], None]) -> None:
        started = time.perf_counter()
        try:
            call()
        except Failed as exc:
            self.tally.failed(op, time.perf_counter() - started, exc)
        else:
            self.tally.ok(op, time.perf_counter() - started)

    # HTTP and gRPC plumbing: every failure becomes Failed with a countable reason.

    def request(
        self, method: str, url: str, *, expect: Sequence[int] = (200,), **kwargs: Any
    ) -> httpx.Response:
        try:
            response = self.http.request(method, url, **kwargs)
        except httpx.TimeoutException as exc:
            raise Failed("timeout", repr(exc)) from exc
        except httpx.HTTPError as exc:
            raise Failed(f"transport: {type(exc).__name__}", repr(exc)) from exc
        if response.status_code not in expect:
            raise Failed(f"HTTP {response.status_code}", response.text[:300])
        return response

    def json_of(self, response: httpx.Response) -> dict[str, Any]:
        try:
            value = response.json()
        except ValueError as exc:
            raise Failed("not JSON", response.text[:200]) from exc
        if not isinstance(value, dict):
            raise Failed("not a JSON object", response.text[:200])
        return value

    def rpc(self, method: Callable[..., Any], request: Any, metadata: Any) -> Any:
        try:
            return method(request, metadata=metadata, timeout=self.plan.timeout)
        except grpc.RpcError as exc:
            raise Failed(f"gRPC {exc.code().name}", exc.details() or "") from exc

    # Checks of what came back.

    def check_expiration(self, expiration: datetime) -> None:
        left = (expiration - datetime.now(UTC)).total_seconds()
        if left < self.plan.credential_floor:
            raise Failed(
                "credential below floor", f"{left:.0f}s left < {self.plan.credential_floor:.0f}s"
            )

    def check_container_credentials(self, body: Mapping[str, Any]) -> None:
        missing = [
            k for k in ("AccessKeyId", "SecretAccessKey", "Token", "Expiration") if not body.get(k)
        ]
        if missing:
            raise Failed("credentials incomplete", f"missing {missing}")
        try:
            expiration = datetime.fromisoformat(str(body["Expiration"]).replace("Z", "+00:00"))
        except ValueError as exc:
            raise Failed("bad Expiration", str(body["Expiration"])) from exc
        self.check_expiration(expiration)

    def check_grpc_credentials(self, answer: Any) -> None:
        if not answer.access_key_id or not answer.secret_access_key or not answer.session_token:
            raise Failed("credentials incomplete", "an empty field in Credentials")
        self.check_expiration(answer.expiration.ToDatetime(tzinfo=UTC))

    # The operations.

    def mint(self, n: int, subject: str) -> None:
        """A token minted and verified at once; every tenth is verified again REVERIFY_AFTER
        later, when the key that signed it has often been retired (still published)."""
        while self.later and time.monotonic() - self.later[0][0] >= REVERIFY_AFTER.total_seconds():
            _, old_token, old_kid, old_subject = self.later.popleft()
            self.timed(
                "reverify", partial(self.verify, old_token, old_kid, old_subject, later=True)
            )
        via_grpc = n % 4 == 3
        op = "mint-grpc" if via_grpc else "mint-http"
        found: list[tuple[str, str]] = []

        def call() -> None:
            if via_grpc:
                answer = self.rpc(
                    self.stub.MintToken,
                    pb.MintTokenRequest(tenant=self.plan.tenant, subject=subject),
                    self.agent_md,
                )
                found.append((answer.token, answer.kid))
            else:
                body = self.json_of(
                    self.request(
                        "POST",
                        f"{self.plan.internal_url}/v1/tokens",
                        json={"tenant": self.plan.tenant, "subject": subject},
                        headers=self.agent,
                    )
                )
                token, kid = body.get("token"), body.get("kid")
                if not isinstance(token, str) or not isinstance(kid, str):
                    raise Failed("mint answer incomplete", str(sorted(body)))
                found.append((token, kid))

        self.timed(op, call)
        if found:
            token, kid = found[0]
            self.timed("verify", lambda: self.verify(token, kid, subject))
            if n % 10 == 0:
                self.later.append((time.monotonic(), token, kid, subject))

    def verify(self, token: str, kid: str, subject: str, *, later: bool = False) -> None:
        try:
            verify_token(
                token,
                self.jwks,
                issuer=self.plan.issuer,
                audience=self.plan.audience,
                subject=f"tenant:{self.plan.tenant}:{subject}",
                kid=kid,
            )
        except TokenRejected as exc:
            raise Failed(f"token rejected: {exc.reason}", str(exc)) from exc
        if later:
            self.tally.count("tokens_reverified")
            return
        self.tally.count("tokens_verified")
        self.tally.count(f"kid:{kid}")

    def vend(self, token: str) -> None:
        def call() -> None:
            response = self.request("GET", self.plan.sandbox_url, headers={"Authorization": token})
            self.check_container_credentials(self.json_of(response))

        self.timed("vend-http", call)

    def vend_grpc(self, token: str) -> None:
        def call() -> None:
            answer = self.rpc(
                self.stub.GetCredentials, pb.GetCredentialsRequest(), (("authorization", token),)
            )
            self.check_grpc_credentials(answer)

        self.timed("vend-grpc", call)

    def churn(self, n: int) -> None:
        """One sandbox's life. Four flavours in turn: HTTP container, gRPC container, HTTP
        container with its own session policy (its own STS exchange), HTTP env delivery."""
        flavour = n % 4
        integration = self.plan.integrations[n % len(self.plan.integrations)]
        created: list[tuple[str, str | None]] = []  # (sandbox id, container token)

        def create() -> None:
            if flavour == 1:
                answer = self.rpc(
                    self.stub.CreateSandbox,
                    pb.CreateSandboxRequest(
                        tenant=self.plan.tenant, integration=integration, ttl_seconds=300
                    ),
                    self.agent_md,
                )
                created.append(
                    (answer.sandbox_id, answer.env.get("AWS_CONTAINER_AUTHORIZATION_TOKEN"))
                )
                return
            body: dict[str, Any] = {
                "tenant": self.plan.tenant,
                "integration": integration,
                "ttl_seconds": 300,
            }
            if flavour == 2:
                body["session_policy"] = SESSION_POLICY
            if flavour == 3:
                body["delivery"] = "env"
            answer_json = self.json_of(
                self.request(
                    "POST",
                    f"{self.plan.internal_url}/v1/sandboxes",
                    json=body,
                    headers=self.agent,
                    expect=(201,),
                )
            )
            env = answer_json.get("env")
            sandbox_id = answer_json.get("sandbox_id")
            if not isinstance(env, dict) or not isinstance(sandbox_id, str):
                raise Failed("sandbox answer incomplete", str(sorted(answer_json)))
            if flavour == 3:
                if not env.get("AWS_ACCESS_KEY_ID") or not env.get("AWS_SESSION_TOKEN"):
                    raise Failed("env delivery without credentials", str(sorted(env)))
                created.append((sandbox_id, None))
                return
            created.append((sandbox_id, env.get("AWS_CONTAINER_AUTHORIZATION_TOKEN")))

        self.timed("sandbox-create", create)
        if not created:
            return
        sandbox_id, token = created[0]
        if token is not None:
            self.vend(token)

        def delete() -> None:
            if flavour == 1:
                self.rpc(
                    self.stub.DeleteSandbox,
                    pb.DeleteSandboxRequest(sandbox_id=sandbox_id),
                    self.agent_md,
                )
            else:
                self.request(
                    "DELETE",
                    f"{self.plan.internal_url}/v1/sandboxes/{sandbox_id}",
                    headers=self.agent,
                    expect=(200, 204),
                )

        self.timed("sandbox-delete", delete)
        if token is None:
            return

        def refused() -> None:
            if flavour == 1:
                try:
                    self.stub.GetCredentials(
                        pb.GetCredentialsRequest(),
                        metadata=(("authorization", token),),
                        timeout=self.plan.timeout,
                    )
                except grpc.RpcError as exc:
                    if exc.code() is grpc.StatusCode.UNAUTHENTICATED:
                        return
                    raise Failed(f"after delete: gRPC {exc.code().name}") from exc
                raise Failed("deleted sandbox still vends", "gRPC GetCredentials answered OK")
            response = self.request(
                "GET", self.plan.sandbox_url, headers={"Authorization": token}, expect=(200, 401)
            )
            if response.status_code != 401:
                raise Failed("deleted sandbox still vends", "GET /v1/credentials answered 200")

        self.timed("vend-after-delete", refused)

    def public(self, n: int) -> None:
        step = n % 4
        base = self.plan.public_url
        if step == 0:

            def discovery() -> None:
                body = self.json_of(self.request("GET", f"{base}/.well-known/openid-configuration"))
                if body.get("issuer") != self.plan.issuer:
                    raise Failed("discovery issuer", str(body.get("issuer")))

            self.timed("discovery", discovery)
        elif step == 1:

            def jwks() -> None:
                response = self.request("GET", f"{base}/.well-known/jwks.json")
                keys = self.json_of(response).get("keys")
                if not isinstance(keys, list) or len(keys) < 2:
                    raise Failed("JWKS without active and pending keys", response.text[:200])
                self.etag = response.headers.get("etag")

            self.timed("jwks", jwks)
        elif step == 2:

            def conditional() -> None:
                headers = {"If-None-Match": self.etag} if self.etag else {}
                response = self.request(
                    "GET", f"{base}/.well-known/jwks.json", headers=headers, expect=(200, 304)
                )
                self.tally.count(f"jwks_conditional_{response.status_code}")

            self.timed("jwks-conditional", conditional)
        else:
            self.timed("jwks-head", self.head)

    def head(self) -> None:
        response = self.request("HEAD", f"{self.plan.public_url}/.well-known/jwks.json")
        if response.content:
            raise Failed("HEAD with a body", f"{len(response.content)} bytes")


def run(plan: Plan) -> dict[str, Any]:
    tally = Tally()
    counter = itertools.count()
    counter_lock = threading.Lock()
    started = time.monotonic()
    deadline = started + plan.seconds
    interval = plan.threads / plan.rate
    with (
        grpc.insecure_channel(plan.grpc_target) as channel,
        httpx.Client(timeout=plan.timeout) as jwks_http,
    ):
        stub = rpc.CredentialBrokerStub(channel)
        jwks = JwksCache(jwks_http, f"{plan.public_url}/.well-known/jwks.json")

        def next_n() -> int:
            with counter_lock:
                return next(counter)

        def thread_main(index: int) -> None:
            ops = Ops(plan, tally, stub, jwks)
            try:
                due = started + interval * index / plan.threads
                while True:
                    now = time.monotonic()
                    if now >= deadline:
                        return
                    if due > now:
                        time.sleep(min(due - now, deadline - now))
                        continue
                    n = next_n()
                    try:
                        one(ops, n)
                    except Exception as exc:  # a bug here must show as an error, not a lull
                        tally.failed(
                            "worker", 0.0, Failed(f"crash: {type(exc).__name__}", repr(exc))
                        )
                    due += interval
                    if time.monotonic() - due > MAX_LAG_INTERVALS * interval:
                        due = time.monotonic()
            finally:
                ops.close()

        threads = [
            threading.Thread(target=thread_main, args=(i,), name=f"{plan.kind}-{i}", daemon=True)
            for i in range(plan.threads)
        ]
        for thread in threads:
            thread.start()
        next_progress = started + PROGRESS_EVERY.total_seconds()
        while any(t.is_alive() for t in threads):
            time.sleep(0.5)
            if time.monotonic() >= next_progress:
                requests, errors = tally.total()
                elapsed = time.monotonic() - started
                print(
                    f"  soak {plan.kind}: {elapsed:.0f}s, {requests} requests, {errors} errors",
                    file=sys.stderr,
                    flush=True,
                )
                next_progress += PROGRESS_EVERY.total_seconds()
        tally.count("jwks_fetches", jwks.fetches)
        tally.count("jwks_kid_misses", jwks.kid_misses)
    return tally.report(plan)


def one(ops: Ops, n: int) -> None:
    """The plan's kind of operation, the n-th of this worker."""
    plan = ops.plan
    if plan.kind == "mint":
        ops.mint(n, f"soak-agent-{n % 16}")
    elif plan.kind == "vend":
        ops.vend(plan.sandbox_tokens[n % len(plan.sandbox_tokens)])
    elif plan.kind == "grpc":
        ops.vend_grpc(plan.sandbox_tokens[n % len(plan.sandbox_tokens)])
    elif plan.kind == "churn":
        ops.churn(n)
    else:
        ops.public(n)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak_load",
        description="One kind of the soak's load; the plan (JSON) on stdin, the report on stdout.",
    )
    parser.parse_args(argv)
    plan = Plan.from_json(sys.stdin.read())
    if plan.kind not in KINDS:
        print(f"unknown kind {plan.kind!r}; one of {', '.join(KINDS)}", file=sys.stderr)
        return 2
    print(json.dumps(run(plan)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
