"""A TCP proxy a test can cut and restore: it takes a real server away from the code under test
(and gives it back) without stopping the server, which other tests share."""

from __future__ import annotations

import contextlib
import enum
import socket
import struct
import threading
from types import TracebackType

# Accept and pump loops wake this often to notice a mode change or close().
_POLL_SECONDS = 0.05
_CHUNK = 65536


class Mode(enum.Enum):
    UP = "up"  # forward both ways
    CUT = "cut"  # the server is gone: open connections reset, new ones reset at once
    BLACKHOLE = "blackhole"  # the network swallows packets: new connections are never answered


class TcpProxy:
    """Forwards 127.0.0.1:`port` to `upstream` while up; runs on its own threads."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self._upstream = (upstream_host, upstream_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(_POLL_SECONDS)
        self.port: int = self._listener.getsockname()[1]
        self._mode = Mode.UP
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._closed = threading.Event()
        self._threads: list[threading.Thread] = []
        self.accepted = 0

    def __enter__(self) -> TcpProxy:
        self._spawn(self._accept_loop)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def cut(self) -> None:
        """Reset every open connection and every new one: PostgreSQL is down."""
        self._switch(Mode.CUT)

    def blackhole(self) -> None:
        """Reset every open connection; accept new ones and never answer: a dead network."""
        self._switch(Mode.BLACKHOLE)

    def restore(self) -> None:
        """Forward again; connections held by the blackhole are reset."""
        self._switch(Mode.UP)

    def close(self) -> None:
        self._closed.set()
        self._reset_open()
        for thread in self._threads:
            thread.join(timeout=5)
        self._listener.close()

    def _switch(self, mode: Mode) -> None:
        with self._lock:
            self._mode = mode
        self._reset_open()

    def _reset_open(self) -> None:
        with self._lock:
            sockets, self._open = self._open, set()
        for sock in sockets:
            _reset(sock)

    def _spawn(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            with self._lock:
                mode = self._mode
            if mode is Mode.CUT:
                _reset(client)
            elif mode is Mode.BLACKHOLE:
                with self._lock:
                    self._open.add(client)
            else:
                self._connect(client)

    def _connect(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self._upstream, timeout=2)
        except OSError:
            _reset(client)
            return
        for sock in (client, upstream):
            sock.settimeout(_POLL_SECONDS)
        with self._lock:
            self._open.update((client, upstream))
        self._spawn(self._pump, client, upstream)
        self._spawn(self._pump, upstream, client)

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        while not self._closed.is_set():
            try:
                data = source.recv(_CHUNK)
            except TimeoutError:
                continue
            except OSError:
                break
            if not data:
                break
            try:
                target.sendall(data)
            except OSError:
                break
        with self._lock:
            self._open.discard(source)
            self._open.discard(target)
        _reset(source)
        _reset(target)


def _reset(sock: socket.socket) -> None:
    """Close with RST rather than FIN: the peer learns at once that the connection is gone."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
