"""Run the real `warrant` executable: the server on 127.0.0.1 and the CLI, as an operator would."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

WARRANT = str(Path(sys.executable).parent / "warrant")
# A cold start imports the whole stack; allow for a loaded CI machine.
START_TIMEOUT = 60.0


# Ports already handed out in this process: the kernel may offer a just-closed port again, and
# two listeners of one server on the same port fail its startup.
_HANDED_OUT: set[int] = set()
# Ports for the servers tests start come from below Linux's ephemeral range (32768-60999), which
# the kernel hands to outgoing connections: a port picked there with bind(0) could be taken by
# some client's connection before the server binds it (seen: "Address already in use" for a
# whole module). Each pytest-xdist worker has a slice of its own, so workers never race either.
_PORTS_FIRST = 20_000
_PORTS_PER_WORKER = 1_500
_WORKER_SLICES = 8


def _worker_index() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")  # gw0, gw1, ...
    digits = worker.removeprefix("gw")
    return int(digits) % _WORKER_SLICES if digits.isdigit() else 0


def free_port() -> int:
    """A loopback port nothing listens on, never one this process handed out before, from this
    worker's slice below the ephemeral range."""
    first = _PORTS_FIRST + _worker_index() * _PORTS_PER_WORKER
    start = (os.getpid() * 7) % _PORTS_PER_WORKER  # a second run beside this one starts apart
    for step in range(_PORTS_PER_WORKER):
        port = first + (start + step) % _PORTS_PER_WORKER
        if port in _HANDED_OUT:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    raise RuntimeError(f"no free port left in {first}-{first + _PORTS_PER_WORKER - 1}")


def base_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WARRANT_")}
    env.update({"WARRANT_DATA_DIR": str(data_dir), "WARRANT_LOG_LEVEL": "WARNING"})
    env.update(extra)
    return env


def cli(env: Mapping[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [WARRANT, *args], env=dict(env), capture_output=True, text=True, timeout=60, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"warrant {' '.join(args)} failed: {result.stderr}")
    return result


@dataclass
class RunningWarrant:
    process: subprocess.Popen[str]
    env: dict[str, str]
    public_url: str
    internal_url: str
    issuer_url: str
    data_dir: Path
    sandbox_url: str
    log_dir: Path
    grpc_target: str  # host:port of the gRPC API

    def logs(self) -> str:
        """Everything the server printed so far (stdout and stderr)."""
        return "".join(p.read_text() for p in sorted(self.log_dir.glob("serve.*")))

    def key(self, role: str) -> dict[str, str]:
        return {"Authorization": "Bearer " + (self.data_dir / f"{role}.key").read_text().strip()}


def wait_healthy(
    urls: list[str],
    process: subprocess.Popen[str],
    log_dir: Path,
    verify: ssl.SSLContext | bool = True,
) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    pending = list(urls)
    while pending:
        if process.poll() is not None:
            err = (log_dir / "serve.err").read_text()
            raise AssertionError(f"warrant serve exited with {process.returncode}: {err}")
        if time.monotonic() > deadline:
            raise AssertionError(f"warrant serve did not become healthy at {pending}")
        try:
            if httpx.get(pending[0] + "/healthz", timeout=1.0, verify=verify).status_code == 200:
                pending.pop(0)
                continue
        except httpx.TransportError:
            pass
        time.sleep(0.05)


@contextmanager
def running_warrant(data_dir: Path, **extra: str) -> Iterator[RunningWarrant]:
    """`warrant serve` in dev mode on free loopback ports; stopped with SIGTERM, which must
    drain and exit 0."""
    for setting in (
        "WARRANT_PUBLIC_ADDR",
        "WARRANT_INTERNAL_ADDR",
        "WARRANT_SANDBOX_ADDR",
        "WARRANT_GRPC_ADDR",
    ):
        extra.setdefault(setting, f"127.0.0.1:{free_port()}")
    public = extra["WARRANT_PUBLIC_ADDR"].rsplit(":", 1)[1]
    internal = extra["WARRANT_INTERNAL_ADDR"].rsplit(":", 1)[1]
    env = base_env(data_dir, WARRANT_DEV="1", **extra)
    # Output goes to files, not pipes: a full pipe would block the server mid-test.
    log_dir = data_dir.parent / f"logs-{data_dir.name}"
    log_dir.mkdir(parents=True, exist_ok=True)
    with (log_dir / "serve.out").open("w") as out, (log_dir / "serve.err").open("w") as err:
        process = subprocess.Popen([WARRANT, "serve"], env=env, stdout=out, stderr=err, text=True)
    internal_scheme = "https" if "WARRANT_INTERNAL_TLS_CERT" in extra else "http"
    sandbox_scheme = "https" if "WARRANT_SANDBOX_TLS_CERT" in extra else "http"
    running = RunningWarrant(
        process,
        env,
        f"http://127.0.0.1:{public}",
        f"{internal_scheme}://127.0.0.1:{internal}",
        env.get("WARRANT_ISSUER_URL", f"http://127.0.0.1:{public}"),
        data_dir,
        f"{sandbox_scheme}://{extra['WARRANT_SANDBOX_ADDR']}/v1/credentials",
        log_dir,
        extra["WARRANT_GRPC_ADDR"],
    )
    try:
        ca = extra.get("WARRANT_INTERNAL_TLS_CERT")
        verify = ssl.create_default_context(cafile=ca) if ca else True
        wait_healthy([running.public_url], process, log_dir)
        wait_healthy([running.internal_url], process, log_dir, verify)
        yield running
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                raise AssertionError("warrant serve did not stop within 15 s of SIGTERM") from None
