"""Servers under test as subprocesses on free 127.0.0.1 ports: started, checked, always stopped.

Each server is pinned to the server CPU, writes its output to files (a full pipe would stall a
server under load) and dies with the benchmark even if the benchmark is killed outright.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.bare import PATH
from bench.errors import BenchError
from bench.loadgen import HttpRequest
from bench.machine import child_setup

__all__ = [
    "BareGrpcServer",
    "BareServer",
    "Probe",
    "RunningServer",
    "Warrant",
    "WarrantLaunch",
    "bare_argv",
    "bare_grpc_server",
    "bare_server",
    "free_port",
    "free_ports",
    "grpc_serving",
    "python_env",
    "warrant_launch",
    "warrant_server",
]

# A cold start imports the whole stack and may generate an RSA key; a loaded machine needs time.
START_TIMEOUT = timedelta(seconds=30)
# Warrant drains in-flight requests for up to 10 s on SIGTERM; past 15 s it is stuck.
STOP_TIMEOUT = timedelta(seconds=15)
HEALTH_POLL = timedelta(milliseconds=50)
HEALTH_REQUEST_TIMEOUT = timedelta(seconds=1)
# How much of a failed server's stderr to show: the traceback, not a whole log.
STDERR_TAIL_CHARS = 4_000
# Every listener `warrant serve` opens: each gets a free port, so a developer's own Warrant on the
# default ports never collides with the benchmark. A listener missing here fails the start with
# "WARRANT_..._ADDR=...: cannot listen there", shown with the server's stderr.
LISTENER_SETTINGS = (
    "WARRANT_PUBLIC_ADDR",
    "WARRANT_INTERNAL_ADDR",
    "WARRANT_SANDBOX_ADDR",
    "WARRANT_GRPC_ADDR",
)


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` distinct free ports on 127.0.0.1: all held open while picked, so that two of
    them can never be the same port freed and handed out again."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]


@dataclass
class RunningServer:
    name: str
    process: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path

    def stderr_tail(self) -> str:
        try:
            text = self.stderr_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return text[-STDERR_TAIL_CHARS:].strip()

    def check_alive(self) -> None:
        """Raises BenchError, with the server's stderr, when it has exited."""
        code = self.process.poll()
        if code is not None:
            raise BenchError(f"{self.name} exited with status {code}:\n{self.stderr_tail()}")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not drain in time. Never raises."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT.total_seconds())
            except subprocess.TimeoutExpired:
                print(f"warning: {self.name} ignored SIGTERM; killing it", file=sys.stderr)
                self.process.kill()
                self.process.wait()


@dataclass(frozen=True, slots=True)
class Probe:
    """A readiness check beyond an HTTP health URL: `check()` is True once `what` serves."""

    what: str
    check: Callable[[], bool]


@contextmanager
def started(
    name: str,
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    health_urls: Sequence[str],
    cpu: int | None,
    workdir: Path,
    probes: Sequence[Probe] = (),
) -> Iterator[RunningServer]:
    """Start `argv`, wait until every health URL answers 200 and then every probe passes,
    yield, and always stop it."""
    workdir.mkdir(parents=True, exist_ok=True)
    stdout_path, stderr_path = workdir / f"{name}.stdout", workdir / f"{name}.stderr"
    with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            list(argv),
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            # The benchmark runs no threads of its own when it starts a server.
            preexec_fn=child_setup(cpu),  # noqa: PLW1509
        )
    server = RunningServer(name, process, stdout_path, stderr_path)
    try:
        _wait_healthy(server, health_urls, probes)
        yield server
    finally:
        server.stop()


def _wait_healthy(server: RunningServer, urls: Sequence[str], probes: Sequence[Probe]) -> None:
    deadline = time.monotonic() + START_TIMEOUT.total_seconds()
    with httpx.Client(timeout=HEALTH_REQUEST_TIMEOUT.total_seconds()) as client:
        pending = [Probe(url, partial(_answers_200, client, url)) for url in urls]
        pending += probes
        while pending:
            server.check_alive()
            if time.monotonic() > deadline:
                raise BenchError(
                    f"{server.name} did not become healthy within "
                    f"{START_TIMEOUT.total_seconds():g}s at {pending[0].what}; its stderr:\n"
                    f"{server.stderr_tail() or '(empty)'}"
                )
            if pending[0].check():
                pending.pop(0)
                continue
            time.sleep(HEALTH_POLL.total_seconds())


def _answers_200(client: httpx.Client, url: str) -> bool:
    try:
        return client.get(url).status_code == 200
    except httpx.TransportError:
        return False


def grpc_serving(target: str) -> bool:
    """True when the gRPC server at `target` (host:port, plaintext) answers the standard health
    check (grpc.health.v1, overall service "") with SERVING."""
    with grpc.insecure_channel(target) as channel:
        # The health stub's type stubs leave its methods out.
        check: Any = health_pb2_grpc.HealthStub(channel).Check  # type: ignore[attr-defined]
        try:
            answer = check(
                health_pb2.HealthCheckRequest(), timeout=HEALTH_REQUEST_TIMEOUT.total_seconds()
            )
        except grpc.RpcError:
            return False
        serving: bool = answer.status == health_pb2.HealthCheckResponse.SERVING
        return serving


@dataclass(frozen=True, slots=True)
class BareServer:
    server: RunningServer
    url: str  # of its one route


@contextmanager
def bare_server(*, cpu: int | None, workdir: Path) -> Iterator[BareServer]:
    """`python -m bench.bare` on a free port."""
    port = free_port()
    url = f"http://127.0.0.1:{port}{PATH}"
    argv = bare_argv(port)
    env = python_env()
    with started("bare", argv, env=env, health_urls=[url], cpu=cpu, workdir=workdir) as server:
        yield BareServer(server, url)


@dataclass(frozen=True, slots=True)
class BareGrpcServer:
    server: RunningServer
    target: str  # host:port of its plaintext gRPC listener


@contextmanager
def bare_grpc_server(*, cpu: int | None, workdir: Path) -> Iterator[BareGrpcServer]:
    """`python -m bench.bare_grpc` on a free port, serving once its health check says so."""
    target = f"127.0.0.1:{free_port()}"
    argv = [sys.executable, "-m", "bench.bare_grpc", "--port", target.rsplit(":", 1)[1]]
    probe = Probe(f"grpc health at {target}", partial(grpc_serving, target))
    with started(
        "bare-grpc",
        argv,
        env=python_env(),
        health_urls=[],
        cpu=cpu,
        workdir=workdir,
        probes=[probe],
    ) as server:
        yield BareGrpcServer(server, target)


@dataclass(frozen=True, slots=True)
class Warrant:
    server: RunningServer
    alg: str
    public_url: str
    internal_url: str
    sandbox_url: str  # GET /v1/credentials on the sandbox listener
    grpc_target: str  # host:port of the gRPC API (plaintext, as in dev mode)
    data_dir: Path
    sts_endpoint: str | None  # WARRANT_STS_ENDPOINT (the stand-in), None for AWS's own

    @property
    def issuer_url(self) -> str:
        """The `iss` of its tokens: in dev mode, the public listener's URL."""
        return self.public_url

    @property
    def keys_dir(self) -> Path:
        return self.data_dir / "keys"

    def api_key(self, role: str) -> str:
        """The bootstrap API key `warrant serve` wrote for `role` (admin or agent)."""
        return (self.data_dir / f"{role}.key").read_text(encoding="ascii").strip()


@dataclass(frozen=True, slots=True)
class WarrantLaunch:
    """How to start `warrant serve` in dev mode on free ports, and where it will answer."""

    name: str
    argv: tuple[str, ...]
    env: dict[str, str]
    public_url: str
    internal_url: str
    sandbox_url: str  # GET /v1/credentials on the sandbox listener
    grpc_target: str
    data_dir: Path

    @property
    def ready_url(self) -> str:
        """GET /readyz on the internal listener: 200 once the database and signing key are."""
        return f"{self.internal_url}/readyz"


def warrant_launch(
    alg: str, *, data_dir: Path, name: str, sts_endpoint: str | None = None
) -> WarrantLaunch:
    """`warrant serve` in dev mode on `data_dir` (created or reused as it is), every listener
    on a free 127.0.0.1 port; with `sts_endpoint`, its broker exchanges tokens there."""
    executable = Path(sys.executable).parent / "warrant"
    if not executable.exists():
        raise BenchError(f"{executable} not found; run 'make setup' to install Warrant")
    ports = dict(zip(LISTENER_SETTINGS, free_ports(len(LISTENER_SETTINGS)), strict=True))
    env = {k: v for k, v in os.environ.items() if not k.startswith("WARRANT_")}
    env.update({setting: f"127.0.0.1:{port}" for setting, port in ports.items()})
    env.update(
        {
            "WARRANT_DEV": "1",
            "WARRANT_DATA_DIR": str(data_dir),
            "WARRANT_KEY_ALG": alg,
            "WARRANT_LOG_LEVEL": "WARNING",
        }
    )
    if sts_endpoint is not None:
        env["WARRANT_STS_ENDPOINT"] = sts_endpoint
    return WarrantLaunch(
        name=name,
        argv=(str(executable), "serve"),
        env=env,
        public_url=f"http://127.0.0.1:{ports['WARRANT_PUBLIC_ADDR']}",
        internal_url=f"http://127.0.0.1:{ports['WARRANT_INTERNAL_ADDR']}",
        # The sandbox listener has only GET /v1/credentials (no /healthz); it opens with the
        # others.
        sandbox_url=f"http://127.0.0.1:{ports['WARRANT_SANDBOX_ADDR']}/v1/credentials",
        grpc_target=f"127.0.0.1:{ports['WARRANT_GRPC_ADDR']}",
        data_dir=data_dir,
    )


@contextmanager
def warrant_server(
    alg: str,
    *,
    cpu: int | None,
    workdir: Path,
    sts_endpoint: str | None = None,
    label: str | None = None,
) -> Iterator[Warrant]:
    """The real `warrant serve` in dev mode, on a fresh data dir under `workdir`; with
    `sts_endpoint`, its broker exchanges tokens there (the stand-in) instead of at AWS. `label`
    names a server apart from the session's own (its log files and data dir)."""
    name = f"warrant-{alg.lower()}" + ("-broker" if sts_endpoint else "")
    if label is not None:
        name += f"-{label}"
    launch = warrant_launch(
        alg, data_dir=workdir / f"{name}-data", name=name, sts_endpoint=sts_endpoint
    )
    with started(
        name,
        launch.argv,
        env=launch.env,
        health_urls=[f"{launch.public_url}/healthz", f"{launch.internal_url}/healthz"],
        cpu=cpu,
        workdir=workdir,
        probes=[
            Probe(
                f"grpc health at {launch.grpc_target}",
                partial(grpc_serving, launch.grpc_target),
            )
        ],
    ) as server:
        yield Warrant(
            server,
            alg,
            launch.public_url,
            launch.internal_url,
            launch.sandbox_url,
            launch.grpc_target,
            launch.data_dir,
            sts_endpoint,
        )


def bare_argv(port: int) -> list[str]:
    """`python -m bench.bare` on 127.0.0.1:`port` (with python_env())."""
    return [sys.executable, "-m", "bench.bare", "--port", str(port)]


def python_env() -> dict[str, str]:
    """This environment, with the repository on PYTHONPATH: so `python -m bench.bare` (or
    `bench.openloop`, `bench.bare_grpc`, `bench.grpcload`) resolves from any working directory."""
    repo_root = str(Path(__file__).resolve().parent.parent)
    python_path = [repo_root, *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(python_path)}


SETUP_TIMEOUT = timedelta(seconds=10)


def call_json(
    server: RunningServer,
    request: HttpRequest,
    *,
    expect: int | tuple[int, ...] = 200,
    label: str | None = None,
) -> dict[str, Any]:
    """One set-up or check request to `server` (`label` names it in errors); its JSON object
    answer, or BenchError with the answer (and the server's stderr) when the status is not the
    expected one."""
    expected = (expect,) if isinstance(expect, int) else expect
    where = f" at {label}" if label else ""
    try:
        response = httpx.request(
            request.method,
            request.url,
            content=request.body,
            headers=dict(request.headers),
            timeout=SETUP_TIMEOUT.total_seconds(),
        )
    except httpx.HTTPError as exc:
        server.check_alive()
        raise BenchError(f"{request.describe()}{where} failed: {exc}") from exc
    if response.status_code not in expected:
        raise BenchError(
            f"{request.describe()}{where} answered {response.status_code}, expected "
            f"{' or '.join(map(str, expected))}: {response.text[:500]}\n"
            f"{server.stderr_tail()}"
        )
    try:
        value = response.json()
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
