"""Running an ASGI app under uvicorn (uvloop, httptools): in a background thread with its own
event loop (tests, the StandIn launcher) or in the main thread until SIGINT/SIGTERM (the CLI)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import threading
import time
from collections.abc import Callable, Generator
from datetime import timedelta

import uvicorn
import uvloop
from starlette.types import ASGIApp

__all__ = ["ServerThread", "bind", "serve_until_signalled"]

# Startup runs the app's lifespan (opening HTTP clients); seconds mean something is wrong.
START_TIMEOUT = timedelta(seconds=15)
# In-flight requests get this long to finish when the server stops.
STOP_GRACE = timedelta(seconds=5)


class _Server(uvicorn.Server):
    """uvicorn re-raises SIGTERM after a graceful exit, killing the process with the signal;
    we install our own handlers instead, so that a stopped stand-in exits with status 0."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def bind(host: str, port: int) -> socket.socket:
    """A listening-ready socket; port 0 picks a free one."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def _server(app: ASGIApp) -> _Server:
    config = uvicorn.Config(
        app,
        loop="none",
        http="httptools",
        lifespan="on",
        log_config=None,
        access_log=False,
        # Relayed responses carry moto's own Date and Server headers; do not add a second pair.
        server_header=False,
        date_header=False,
        timeout_graceful_shutdown=int(STOP_GRACE.total_seconds()),
    )
    return _Server(config)


class ServerThread:
    """`start()` returns once the app is serving (its lifespan has started); `stop()` waits for
    a graceful shutdown."""

    def __init__(self, app: ASGIApp, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = _server(app)
        self._host = host
        self._requested_port = port
        self._socket: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def port(self) -> int:
        if self._socket is None:
            raise RuntimeError("the server is not started")
        port: int = self._socket.getsockname()[1]
        return port

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self.port}"

    def start(self) -> None:
        self._socket = bind(self._host, self._requested_port)
        self._thread = threading.Thread(
            target=self._run, args=(self._socket,), name="standin-uvicorn", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT.total_seconds()
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the server on {self._host} did not start") from self._error
            time.sleep(0.005)

    def _run(self, sock: socket.socket) -> None:
        try:
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                runner.run(self._server.serve(sockets=[sock]))
        except BaseException as exc:  # surfaced by start()
            self._error = exc

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=STOP_GRACE.total_seconds() + 5)
            self._thread = None
        if self._socket is not None:
            self._socket.close()


async def serve_until_signalled(
    app: ASGIApp, sock: socket.socket, on_ready: Callable[[], None]
) -> None:
    """Serve in the running loop until SIGINT or SIGTERM; `on_ready` runs once serving."""
    server = _server(app)
    loop = asyncio.get_running_loop()

    def stop() -> None:
        server.should_exit = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            await task
            raise RuntimeError("the stand-in did not start")
        await asyncio.sleep(0.01)
    on_ready()
    await task
