"""`StandIn`: moto's server and the gate in front of it, in this process, for tests and demos.

    with StandIn(allow_http_issuers=True) as standin:
        sts = boto3.client("sts", endpoint_url=standin.endpoint_url, ...)

moto keeps its state in module globals, so every StandIn in one process shares one AWS: use
distinct names (or moto's `/moto-api/reset`) when several tests share a process.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from types import TracebackType

from moto.server import ThreadedMotoServer

from broker.standin.app import create_app
from broker.standin.idp import IDP_TIMEOUT
from broker.standin.model import Clock, utc_now
from broker.standin.options import GateOptions
from broker.standin.serving import ServerThread

__all__ = ["StandIn", "start_moto"]


def start_moto(host: str = "127.0.0.1", port: int = 0) -> tuple[ThreadedMotoServer, str]:
    """moto's server on a thread; returns it and its URL. Its per-request log lines (werkzeug,
    INFO) are silenced: they would drown the gate's own log."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address=host, port=port, verbose=False)
    server.start()
    bound_host, bound_port = server.get_host_and_port()
    return server, f"http://{bound_host}:{bound_port}"


class StandIn:
    """Start with `start()` / `with` / `async with`; `endpoint_url` is the gate (give it to
    botocore as the STS and IAM endpoint), `moto_url` is moto itself (no checks: setup only)."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        allow_http_issuers: bool = False,
        credential_lifetime: timedelta | None = None,
        idp_timeout: timedelta | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self.options = GateOptions(
            allow_http_issuers=allow_http_issuers,
            credential_lifetime=credential_lifetime,
            idp_timeout=IDP_TIMEOUT if idp_timeout is None else idp_timeout,
        )
        self._host = host
        self._port = port
        self._clock = clock
        self._moto: ThreadedMotoServer | None = None
        self._moto_url: str | None = None
        self._gate: ServerThread | None = None

    @property
    def endpoint_url(self) -> str:
        if self._gate is None:
            raise RuntimeError("the stand-in is not started")
        return self._gate.url

    @property
    def moto_url(self) -> str:
        if self._moto_url is None:
            raise RuntimeError("the stand-in is not started")
        return self._moto_url

    def start(self) -> StandIn:
        self._moto, self._moto_url = start_moto(self._host)
        try:
            self._gate = ServerThread(
                create_app(self._moto_url, self.options, self._clock), self._host, self._port
            )
            self._gate.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self._gate is not None:
            self._gate.stop()
            self._gate = None
        if self._moto is not None:
            self._moto.stop()
            self._moto = None
            self._moto_url = None

    def __enter__(self) -> StandIn:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> StandIn:
        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)
