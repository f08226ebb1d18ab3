"""Run several ASGI listeners in one event loop (uvloop + httptools) and stop them together.

uvicorn's own signal capture is per server; with several servers in one loop, one supervisor
owns the signals and tells every server to drain and exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import socket
import sys
from collections.abc import Callable, Coroutine, Generator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import uvicorn
from starlette.types import ASGIApp

from issuer.errors import ConfigError
from issuer.settings import Address, TlsFiles

log = logging.getLogger(__name__)

# Idle keep-alive connections are closed after this; STS and SDKs reconnect cheaply.
KEEP_ALIVE_TIMEOUT = 5
# On SIGTERM, in-flight requests get this long to finish.
GRACEFUL_SHUTDOWN_SECONDS = 10


@dataclass(frozen=True, slots=True)
class Listener:
    name: str  # also names the setting in errors, e.g. "public" -> WARRANT_PUBLIC_ADDR
    app: ASGIApp
    address: Address
    setting: str
    tls: TlsFiles | None = None
    # Stops only after every other listener has drained: the public listener keeps serving
    # JWKS to STS while in-flight exchanges on the other listeners finish.
    stop_last: bool = False


class Service(Protocol):
    """A server that is not ASGI (the gRPC listener), run alongside the HTTP listeners."""

    async def start(self) -> None:
        """Bind and serve; raise ConfigError naming the setting when it cannot."""
        ...

    async def stop(self, grace: float) -> None:
        """Refuse new calls; give in-flight ones `grace` seconds."""
        ...


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # the supervisor in serve() owns the signals


def uvicorn_config(app: ASGIApp, address: Address, tls: TlsFiles | None = None) -> uvicorn.Config:
    """The server settings every listener uses, and the benchmarks' baseline too."""
    return uvicorn.Config(
        app,
        host=address.host,
        port=address.port,
        http="httptools",
        loop="none",
        lifespan="off",
        access_log=False,
        server_header=False,
        # We never trust X-Forwarded-For: a client must not choose the address we log.
        proxy_headers=False,
        log_config=None,
        timeout_keep_alive=KEEP_ALIVE_TIMEOUT,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        ssl_certfile=str(tls.cert) if tls else None,
        ssl_keyfile=str(tls.key) if tls else None,
    )


def bind(address: Address, setting: str) -> socket.socket:
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((address.host, address.port))
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"{setting}={address}: cannot listen there ({exc.strerror}); choose a free address"
        ) from None
    sock.set_inheritable(True)
    return sock


async def _drain(
    listeners: Sequence[Listener],
    servers: Sequence[_Server],
    tasks: Sequence[asyncio.Task[None]],
    services: Sequence[Service],
) -> None:
    """Stop in two waves: first every listener and service but the `stop_last` ones, waiting
    for their in-flight requests; then the rest."""
    for wave in (False, True):
        chosen = [i for i, listener in enumerate(listeners) if listener.stop_last is wave]
        for i in chosen:
            servers[i].should_exit = True
        await asyncio.gather(
            *(tasks[i] for i in chosen),
            *(
                service.stop(GRACEFUL_SHUTDOWN_SECONDS)
                for service in (services if not wave else ())
            ),
            return_exceptions=True,
        )


async def _start_all(services: Sequence[Service]) -> list[Service]:
    """Start each service; if one cannot, stop those already started and re-raise."""
    started: list[Service] = []
    try:
        for service in services:
            await service.start()
            started.append(service)
    except BaseException:
        for service in started:
            await service.stop(0)
        raise
    return started


SWITCH_INTERVAL_SECONDS = 0.0005


async def serve(
    listeners: Sequence[Listener],
    *,
    services: Sequence[Service] = (),
    background: Callable[[], Coroutine[Any, Any, None]] | None = None,
    on_ready: Callable[[], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Bind every listener first (a taken port fails before anything serves), then serve until
    SIGINT/SIGTERM or `stop` is set, then drain all of them."""
    sockets = [bind(listener.address, listener.setting) for listener in listeners]
    try:
        started = await _start_all(services)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    # Everything loaded so far lives as long as the process: move it out of the collector's
    # reach, or full collections over it pause every listener (measured: ~45 ms, up to 117 ms).
    gc.collect()
    gc.freeze()
    # The audit log's sync thread needs the GIL back after each fdatasync, and the loop holds it
    # while it is busy: with Python's 5 ms switch interval a whole batch of requests waited up
    # to 5 ms for it under load (the p99). A finer interval bounds that wait.
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
    servers = [
        _Server(uvicorn_config(listener.app, listener.address, listener.tls))
        for listener in listeners
    ]
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    tasks = [
        asyncio.create_task(server.serve(sockets=[sock]))
        for server, sock in zip(servers, sockets, strict=True)
    ]
    extra = asyncio.create_task(background()) if background else None
    try:
        while not all(server.started for server in servers):
            if any(task.done() for task in tasks):
                break
            await asyncio.sleep(0.01)
        if on_ready and all(server.started for server in servers):
            on_ready()
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
    finally:
        await _drain(listeners, servers, tasks, started)
        if extra is not None:
            extra.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await extra
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        for sock in sockets:
            sock.close()
