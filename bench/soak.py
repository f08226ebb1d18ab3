"""`python -m bench.soak`: minutes of mixed load on a real `warrant serve` while its own scheduler
rotates the signing key every minute; counts every error and watches the server's memory.

    python -m bench.soak [--minutes 10] [--rotate-every 60] [--rate-scale 1.0]

What runs: the STS stand-in (`python -m broker.standin`, moto behind the strict gate, issuing
credentials that live 31 minutes so the broker refreshes each integration's session about once a
minute) and `warrant serve` exchanging there, with short key settings that keep the
publish-ahead policy (`soak_settings`): the server rotates on schedule, never forced, so every
verifier that caches the JWKS for its max-age still knows each new key before it signs. Set up
as an operator would (bench.world): the tenant, IAM OIDC provider, integrations with roles
trusting exactly their tokens, and long-lived sandboxes.

Then, for the duration, one process per kind of load (bench.soak_load): token mints (HTTP and
gRPC, each token verified with PyJWT against the served JWKS, cached per its max-age), credential
vends on the sandbox listener, gRPC GetCredentials, sandbox create/use/delete churn, and
discovery/JWKS fetches. Meanwhile this process samples the server's RSS, open descriptors and
threads from /proc, and follows the key set (GET /v1/keys) to count rotations.

Targets: no error at all (any non-2xx, transport error, wrong answer, rejected token, failed STS
exchange at the stand-in, ERROR in the server's log); RSS drift below 10 % from the end of the
warm-up (the first minute, or a third of a shorter run) to the end; at least the rotations the
schedule promises. The summary is printed and written to bench/results/soak-<timestamp>.json.

Exit status: 0 when every target is met, 1 when one is missed or the soak could not run, 2 on a
bad option, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any

import httpx

from bench.errors import BenchError
from bench.machine import child_setup
from bench.servers import (
    Probe,
    RunningServer,
    Warrant,
    free_port,
    grpc_serving,
    python_env,
    started,
    warrant_launch,
)
from bench.soak_load import KINDS, Plan
from bench.soak_report import (
    RESULTS_DIR,
    KeyWatch,
    MemorySample,
    SoakResult,
    render,
    write_json,
)
from bench.world import BROKER_ALG, TENANT, BrokerWorld, checked
from broker.settings import DEFAULT_CREDENTIAL_FLOOR
from issuer.tenants import audience_for
from keys.errors import PolicyError
from keys.model import DEFAULT_RELOAD_INTERVAL, MAX_PUBLISHED_KEYS, RotationPolicy

__all__ = ["Options", "main", "soak_settings"]

DEFAULT_MINUTES = 10.0
DEFAULT_ROTATE_EVERY = 60  # seconds
DEFAULT_WARMUP = 60  # seconds; capped at a third of the run
DEFAULT_SAMPLE_EVERY = 5  # seconds between RSS samples
MAX_DRIFT_PCT = 10.0
# How often the key set is read to see rotations: well under the shortest rotation period.
KEYS_POLL = timedelta(seconds=2)
PROGRESS_EVERY = timedelta(seconds=30)
# The shortest token lifetime Warrant allows, as the longest: retired keys leave the JWKS after
# max TTL + max-age + 5 min, and with a rotation a minute the JWKS must stay within its 10 keys.
TOKEN_TTL = timedelta(seconds=60)
# Credentials from the stand-in live this long: 1 minute past the broker's 30-minute refresh-ahead,
# so every integration's session is refreshed (a fresh token exchanged) about once a minute, and
# far above the 20-minute floor, so vends never wait.
CREDENTIAL_LIFETIME = timedelta(minutes=31)
INTEGRATIONS = 3
SANDBOXES_PER_INTEGRATION = 2
REQUEST_TIMEOUT = timedelta(seconds=10)
# Workers stop on their own at the deadline; past this they have hung.
WORKER_GRACE = timedelta(seconds=60)
# A worker gone this long before the deadline has failed (threads end a little early).
WORKER_EARLY_EXIT = 5  # seconds
# Error messages kept verbatim per check (the counts cover the rest).
MAX_SAMPLES = 8
EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130


@dataclass(frozen=True, slots=True)
class KindLoad:
    threads: int
    rate: float  # operations per second at --rate-scale 1


# A steady load a shared 2-CPU machine sustains with room to spare (a soak looks for leaks and
# errors over time, not for the maximum rate): about 200 requests per second in all.
LOADS: dict[str, KindLoad] = {
    "mint": KindLoad(threads=4, rate=40),  # + a verification each
    "vend": KindLoad(threads=4, rate=60),
    "grpc": KindLoad(threads=4, rate=60),
    "churn": KindLoad(threads=3, rate=3),  # sandbox lives: create, vend, delete, refused
    "public": KindLoad(threads=2, rate=20),
}
assert set(LOADS) == set(KINDS)  # noqa: S101 - a module invariant


@dataclass(frozen=True, slots=True)
class Options:
    minutes: float
    rotate_every: int  # seconds
    rate_scale: float
    warmup: float  # seconds, already capped
    sample_every: float
    max_drift_pct: float

    @property
    def seconds(self) -> float:
        return self.minutes * 60


def soak_settings(rotate_every: int) -> dict[str, str]:
    """The server's key settings for a rotation every `rotate_every` seconds by its own
    scheduler, within the publish-ahead policy (RotationPolicy.validate): max-age a sixth of the
    period, publish-ahead half of it (longer than max-age + the reload interval), maintenance
    every twelfth. Raises BenchError when no such settings exist or the JWKS would outgrow its
    key limit (retired keys stay published for max TTL + max-age + 5 minutes)."""
    policy, maintenance = _policy(rotate_every)
    try:
        policy.validate()
    except PolicyError as exc:
        raise BenchError(f"--rotate-every {rotate_every}: {exc}") from exc
    if not _jwks_fits(policy, maintenance):
        shortest = next(r for r in itertools.count(rotate_every) if _jwks_fits(*_policy(r)))
        raise BenchError(
            f"--rotate-every {rotate_every}: retired keys stay published "
            f"{policy.retire_for.total_seconds():.0f}s, so the JWKS would outgrow its "
            f"{MAX_PUBLISHED_KEYS} keys and rotations would stall; use at least {shortest}s"
        )
    return {
        "WARRANT_KEY_ROTATION_PERIOD": f"{rotate_every}s",
        "WARRANT_KEY_PUBLISH_AHEAD": f"{int(policy.publish_ahead.total_seconds())}s",
        "WARRANT_JWKS_MAX_AGE": f"{int(policy.jwks_max_age.total_seconds())}s",
        "WARRANT_KEY_MAINTENANCE_INTERVAL": f"{maintenance}s",
        "WARRANT_TOKEN_MAX_TTL": f"{int(TOKEN_TTL.total_seconds())}s",
        "WARRANT_TOKEN_DEFAULT_TTL": f"{int(TOKEN_TTL.total_seconds())}s",
    }


def _policy(rotate_every: int) -> tuple[RotationPolicy, int]:
    """The policy for a rotation every `rotate_every` seconds, and the maintenance interval."""
    policy = RotationPolicy(
        publish_ahead=timedelta(seconds=rotate_every // 2),
        rotation_period=timedelta(seconds=rotate_every),
        jwks_max_age=timedelta(seconds=max(1, rotate_every // 6)),
        max_token_ttl=TOKEN_TTL,
        reload_interval=DEFAULT_RELOAD_INTERVAL,
    )
    return policy, max(1, rotate_every // 12)


def _jwks_fits(policy: RotationPolicy, maintenance: int) -> bool:
    """Whether the keys published at once stay within the JWKS limit: those retired within
    `retire_for` (plus a maintenance interval before pruning), the retiring one, the active and
    the pending key."""
    period = policy.rotation_period.total_seconds()
    retired = math.floor((policy.retire_for.total_seconds() + maintenance) / period)
    return retired + 3 <= MAX_PUBLISHED_KEYS


def expected_rotations(seconds: float, rotate_every: int) -> int:
    """Rotations the schedule promises in `seconds` at least: one per period plus the
    maintenance interval at which the scheduler notices it is due."""
    _, maintenance = _policy(rotate_every)
    return math.floor(seconds / (rotate_every + maintenance))


# Servers.


@contextmanager
def standin_server(workdir: Path) -> Iterator[tuple[RunningServer, str]]:
    """`python -m broker.standin` on a free port: a process of its own, so its CPU and memory
    never mix with the load generators'. Yields it and its endpoint URL."""
    url = f"http://127.0.0.1:{free_port()}"
    argv = [
        sys.executable,
        "-m",
        "broker.standin",
        "--port",
        url.rsplit(":", 1)[1],
        "--allow-http-issuers",
        "--credential-lifetime",
        str(int(CREDENTIAL_LIFETIME.total_seconds())),
        "--log-level",
        "WARNING",
    ]
    with started(
        "sts-standin",
        argv,
        env=python_env(),
        health_urls=[f"{url}/_standin/health"],
        cpu=None,
        workdir=workdir,
    ) as server:
        yield server, url


@contextmanager
def soak_warrant(workdir: Path, sts_endpoint: str, settings: dict[str, str]) -> Iterator[Warrant]:
    """`warrant serve` as bench.servers launches it (dev mode, free ports, the stand-in as STS),
    plus the soak's key `settings` and JSON logs (so ERROR lines can be counted), not pinned to a
    CPU: a soak shares the machine as production does."""
    launch = warrant_launch(
        BROKER_ALG,
        data_dir=workdir / "warrant-soak-data",
        name="warrant-soak",
        sts_endpoint=sts_endpoint,
    )
    env = {**launch.env, "WARRANT_LOG_FORMAT": "json", **settings}
    grpc_target = launch.grpc_target
    with started(
        launch.name,
        launch.argv,
        env=env,
        health_urls=[f"{launch.public_url}/healthz", f"{launch.internal_url}/healthz"],
        cpu=None,
        workdir=workdir,
        probes=[Probe(f"grpc health at {grpc_target}", partial(grpc_serving, grpc_target))],
    ) as server:
        yield Warrant(
            server,
            BROKER_ALG,
            launch.public_url,
            launch.internal_url,
            launch.sandbox_url,
            grpc_target,
            launch.data_dir,
            sts_endpoint,
        )


# Set-up.


@dataclass(frozen=True, slots=True)
class World:
    integrations: tuple[str, ...]
    sandbox_tokens: tuple[str, ...] = field(repr=False)


def set_up(world: BrokerWorld, seconds: float) -> World:
    """The tenant, provider, integrations with their roles, and sandboxes that outlive the run."""
    world.setup()
    refs = [world.integration("soak") for _ in range(INTEGRATIONS)]
    agent = {"Authorization": f"Bearer {world.warrant.api_key('agent')}"}
    ttl = min(86_400, int(seconds) + 600)
    tokens = []
    url = f"{world.warrant.internal_url}/v1/sandboxes"
    for ref in refs:
        for _ in range(SANDBOXES_PER_INTEGRATION):
            response = world.http.post(
                url,
                json={"tenant": TENANT, "integration": ref.name, "ttl_seconds": ttl},
                headers=agent,
            )
            body = checked(world.warrant, f"POST {url}", response, 201)
            tokens.append(str(body["env"]["AWS_CONTAINER_AUTHORIZATION_TOKEN"]))
    return World(tuple(ref.name for ref in refs), tuple(tokens))


# Watching the server.


def memory_sample(pid: int, at: float) -> MemorySample:
    """RSS, peak RSS, threads and open descriptors of `pid`, from /proc."""
    fields: dict[str, int] = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in {"VmRSS", "VmHWM", "Threads"}:
                fields[name] = int(value.split()[0])
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return MemorySample(
        at=round(at, 1),
        rss_kib=fields["VmRSS"],
        hwm_kib=fields["VmHWM"],
        threads=fields["Threads"],
        fds=fds,
    )


class KeyFollower:
    """Reads GET /v1/keys and counts changes of the active kid (rotations)."""

    def __init__(self, client: httpx.Client, warrant: Warrant) -> None:
        self._client = client
        self._url = f"{warrant.internal_url}/v1/keys"
        self._headers = {"Authorization": f"Bearer {warrant.api_key('admin')}"}
        self.watch = KeyWatch()

    def poll(self, at: float) -> str | None:
        """None, or what went wrong (an error of the soak)."""
        try:
            response = self._client.get(self._url, headers=self._headers)
        except httpx.HTTPError as exc:
            return f"GET /v1/keys: {exc!r}"
        if response.status_code != 200:
            return f"GET /v1/keys answered {response.status_code}: {response.text[:200]}"
        keys = response.json()["keys"]
        active = [k["kid"] for k in keys if k["state"] == "active"]
        if len(active) != 1:
            return f"GET /v1/keys: {len(active)} active keys"
        published = sum(1 for k in keys if k["state"] in {"active", "pending", "retired"})
        self.watch.observe(at, active[0], published)
        return None


def server_log(path: Path) -> tuple[Counter[str], list[str]]:
    """Lines of the server's JSON log by level, and the first ERROR/CRITICAL messages. Plain-text
    lines count as TEXT, except that a traceback printed past the logger counts as an ERROR."""
    levels: Counter[str] = Counter()
    messages: list[str] = []
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return levels, messages
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            level = str(entry.get("level", "ERROR"))
            message = str(entry.get("message", ""))
        except (ValueError, AttributeError):
            # Plain text: the dev-mode banner ("WARNING: ..."), or a traceback past the logger.
            level = "ERROR" if line.startswith("Traceback") else "TEXT"
            message = line
        levels[level] += 1
        if level in {"ERROR", "CRITICAL"} and len(messages) < 5:
            messages.append(message[:300])
    return levels, messages


def standin_failures(client: httpx.Client, sts_endpoint: str) -> tuple[dict[str, int], int]:
    """Successful AssumeRoleWithWebIdentity calls at the stand-in, and every call of any action
    that did not succeed: (ok counts by action, failures)."""
    stats = client.get(f"{sts_endpoint}/_standin/stats").json()
    ok = {action: int(outcomes.get("ok", 0)) for action, outcomes in stats.items()}
    failed = sum(
        int(n) for outcomes in stats.values() for outcome, n in outcomes.items() if outcome != "ok"
    )
    return ok, failed


# The run.


def run(options: Options, progress: Callable[[str], None]) -> SoakResult:
    settings = soak_settings(options.rotate_every)
    with tempfile.TemporaryDirectory(prefix="warrant-soak-") as scratch, ExitStack() as stack:
        workdir = Path(scratch)
        progress("starting the STS stand-in and warrant serve ...")
        standin, sts_endpoint = stack.enter_context(standin_server(workdir))
        warrant = stack.enter_context(soak_warrant(workdir, sts_endpoint, settings))
        world = BrokerWorld(warrant)
        stack.callback(world.close)
        setup = set_up(world, options.seconds)
        progress(
            f"set up: {len(setup.integrations)} integrations, {len(setup.sandbox_tokens)} "
            f"sandboxes; key settings {' '.join(f'{k}={v}' for k, v in settings.items())}"
        )
        client = stack.enter_context(httpx.Client(timeout=REQUEST_TIMEOUT.total_seconds()))
        workers = start_workers(options, warrant, setup, stack)
        progress(
            f"soaking for {options.minutes:g} min: "
            + ", ".join(f"{kind} {LOADS[kind].rate * options.rate_scale:g}/s" for kind in workers)
        )
        return watch(
            options=options,
            settings=settings,
            warrant=warrant,
            standin=standin,
            client=client,
            workers=workers,
            progress=progress,
        )


def start_workers(
    options: Options, warrant: Warrant, setup: World, stack: ExitStack
) -> dict[str, subprocess.Popen[str]]:
    workers: dict[str, subprocess.Popen[str]] = {}
    for kind, load in LOADS.items():
        plan = Plan(
            kind=kind,
            seconds=options.seconds,
            rate=load.rate * options.rate_scale,
            threads=load.threads,
            timeout=REQUEST_TIMEOUT.total_seconds(),
            issuer=warrant.issuer_url,
            public_url=warrant.public_url,
            internal_url=warrant.internal_url,
            sandbox_url=warrant.sandbox_url,
            grpc_target=warrant.grpc_target,
            tenant=TENANT,
            audience=audience_for(TENANT),
            agent_key=warrant.api_key("agent"),
            credential_floor=DEFAULT_CREDENTIAL_FLOOR.total_seconds(),
            integrations=setup.integrations,
            sandbox_tokens=setup.sandbox_tokens,
        )
        process = subprocess.Popen(
            [sys.executable, "-m", "bench.soak_load"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=python_env(),
            text=True,
            preexec_fn=child_setup(None),  # noqa: PLW1509 - no threads of ours run yet
        )
        stack.callback(_stop, process)
        assert process.stdin is not None  # noqa: S101 - stdin=PIPE
        # The plan carries keys and tokens: stdin, never argv.
        process.stdin.write(plan.to_json())
        process.stdin.close()
        process.stdin = None  # so communicate() does not flush the closed pipe
        workers[kind] = process
    return workers


def _stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait()


class Watch:
    """What this process checks itself, while the load runs and after it: the server and the
    stand-in stay up, the workers run, memory, the key set, the stand-in's answers, /readyz and
    the server's log. Problems count as errors of the soak, by check."""

    def __init__(
        self,
        warrant: Warrant,
        standin: RunningServer,
        client: httpx.Client,
        progress: Callable[[str], None],
    ) -> None:
        self.warrant = warrant
        self.standin = standin
        self.client = client
        self.progress = progress
        self.follower = KeyFollower(client, warrant)
        self.errors: Counter[str] = Counter()
        self.samples: list[str] = []
        self.memory: list[MemorySample] = []
        self.start = time.monotonic()

    def error(self, check: str, message: str) -> None:
        self.errors[check] += 1
        if len(self.samples) < MAX_SAMPLES:
            self.samples.append(message)

    def sample_memory(self) -> MemorySample:
        sample = memory_sample(self.warrant.server.process.pid, time.monotonic() - self.start)
        self.memory.append(sample)
        return sample

    def poll_keys(self) -> None:
        problem = self.follower.poll(time.monotonic() - self.start)
        if problem is not None:
            self.error("keys-poll", problem)

    def during(self, options: Options, workers: Mapping[str, subprocess.Popen[str]]) -> None:
        """Until the load's deadline: memory every `sample_every`, the key set every
        KEYS_POLL, a progress line every PROGRESS_EVERY; BenchError when a process died."""
        deadline = self.start + options.seconds
        next_sample = next_keys = self.start
        next_progress = self.start + PROGRESS_EVERY.total_seconds()
        while (now := time.monotonic()) < deadline:
            self.warrant.server.check_alive()
            self.standin.check_alive()
            for kind, process in workers.items():
                if process.poll() is not None and deadline - now > WORKER_EARLY_EXIT:
                    raise BenchError(f"the {kind} load worker exited early ({process.returncode})")
            if now >= next_sample:
                self.sample_memory()
                next_sample += options.sample_every
            if now >= next_keys:
                self.poll_keys()
                next_keys += KEYS_POLL.total_seconds()
            if now >= next_progress:
                watch = self.follower.watch
                self.progress(
                    f"  {now - self.start:.0f}s: RSS {self.memory[-1].rss_kib / 1024:.1f} MiB, "
                    f"{watch.rotations} rotations, active key {watch.active[:12]}"
                )
                next_progress += PROGRESS_EVERY.total_seconds()
            time.sleep(max(0.0, min(next_sample, next_keys, deadline) - time.monotonic()))
        self.sample_memory()
        self.poll_keys()

    def after(self) -> tuple[dict[str, int], Counter[str]]:
        """The stand-in's successful calls by action and the server's log lines by level,
        counting failed calls, an unready server and ERROR lines as errors."""
        try:
            exchanges, sts_failures = standin_failures(self.client, self.warrant.sts_endpoint or "")
            ready = self.client.get(f"{self.warrant.internal_url}/readyz")
        except (httpx.HTTPError, ValueError, AttributeError) as exc:
            raise BenchError(f"cannot read the stand-in's stats or /readyz: {exc!r}") from exc
        if sts_failures:
            self.errors["sts-standin"] += sts_failures
            self.samples.append(f"{sts_failures} calls failed at the STS stand-in")
        if ready.status_code != 200:
            self.error("readyz", f"/readyz answered {ready.status_code}: {ready.text[:200]}")
        levels, log_errors = server_log(self.warrant.server.stderr_path)
        if levels["ERROR"] + levels["CRITICAL"]:
            self.errors["server-log"] += levels["ERROR"] + levels["CRITICAL"]
            self.samples += [f"server log: {m}" for m in log_errors]
        return exchanges, levels


def watch(
    *,
    options: Options,
    settings: dict[str, str],
    warrant: Warrant,
    standin: RunningServer,
    client: httpx.Client,
    workers: dict[str, subprocess.Popen[str]],
    progress: Callable[[str], None],
) -> SoakResult:
    date = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    checks = Watch(warrant, standin, client, progress)
    checks.during(options, workers)
    progress("load done; collecting the workers' reports ...")
    reports = collect(workers)
    exchanges, levels = checks.after()
    return SoakResult(
        date=date,
        options={
            "minutes": options.minutes,
            "rotate_every": options.rotate_every,
            "rate_scale": options.rate_scale,
            "warmup_seconds": options.warmup,
            "sample_every": options.sample_every,
            "max_drift_pct": options.max_drift_pct,
            "credential_lifetime_seconds": int(CREDENTIAL_LIFETIME.total_seconds()),
            "integrations": INTEGRATIONS,
            "sandboxes": INTEGRATIONS * SANDBOXES_PER_INTEGRATION,
            "cpus": os.cpu_count() or 0,
        },
        settings=settings,
        workers=reports,
        extra_errors=dict(checks.errors),
        extra_samples=checks.samples,
        keys=checks.follower.watch,
        memory=checks.memory,
        sts_ok=exchanges,
        server_log_levels=dict(levels),
        rotations_expected=expected_rotations(options.seconds, options.rotate_every),
    )


def collect(workers: dict[str, subprocess.Popen[str]]) -> dict[str, dict[str, Any]]:
    reports: dict[str, dict[str, Any]] = {}
    for kind, process in workers.items():
        try:
            out, _ = process.communicate(timeout=WORKER_GRACE.total_seconds())
        except subprocess.TimeoutExpired as exc:
            raise BenchError(f"the {kind} load worker did not stop") from exc
        if process.returncode != 0:
            raise BenchError(f"the {kind} load worker failed (exit {process.returncode})")
        try:
            reports[kind] = json.loads(out)
        except ValueError as exc:
            raise BenchError(f"cannot read the {kind} worker's report: {out[:300]}") from exc
    return reports


# Command line.


def _positive(kind: Callable[[str], float]) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError("must be positive")
        return value

    return parse


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.soak",
        description="Mixed load on a real warrant serve with scheduled key rotations; "
        "prints errors (target 0) and RSS drift (target < 10%%).",
    )
    p.add_argument("--minutes", type=_positive(float), default=DEFAULT_MINUTES)
    p.add_argument(
        "--rotate-every",
        type=_positive(int),
        default=DEFAULT_ROTATE_EVERY,
        metavar="SECONDS",
        help=f"key rotation period of the server's scheduler (default {DEFAULT_ROTATE_EVERY})",
    )
    p.add_argument(
        "--rate-scale",
        type=_positive(float),
        default=1.0,
        metavar="X",
        help="multiply every kind's request rate (default 1: about 200 requests/s in all)",
    )
    p.add_argument(
        "--warmup",
        type=_positive(float),
        default=DEFAULT_WARMUP,
        metavar="SECONDS",
        help=f"RSS drift is measured from here (default {DEFAULT_WARMUP}, at most a third "
        "of the run)",
    )
    p.add_argument(
        "--sample-every",
        type=_positive(float),
        default=DEFAULT_SAMPLE_EVERY,
        metavar="SECONDS",
        help=f"RSS sampling interval (default {DEFAULT_SAMPLE_EVERY})",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    seconds = args.minutes * 60
    options = Options(
        minutes=args.minutes,
        rotate_every=int(args.rotate_every),
        rate_scale=args.rate_scale,
        warmup=min(args.warmup, seconds / 3),
        sample_every=args.sample_every,
        max_drift_pct=MAX_DRIFT_PCT,
    )
    try:
        soak_settings(options.rotate_every)
    except BenchError as exc:
        parser().error(str(exc))
    signal.signal(signal.SIGTERM, _interrupt)  # so `finally` stops the servers and workers
    try:
        result = run(options, _progress)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("interrupted; servers and workers stopped", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(render(result))
    path = write_json(result, RESULTS_DIR)
    print(f"written: {path}")
    return 0 if result.passed else EXIT_FAILED


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
