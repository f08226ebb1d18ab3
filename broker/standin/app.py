"""The ASGI app: the admin routes, and everything else to the gate. The gate and its clients are
opened by the app's lifespan, so the app is only usable under a server that runs lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import cast

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from broker.standin.admin import admin_routes
from broker.standin.gate import Gate, open_gate
from broker.standin.model import Clock, utc_now
from broker.standin.options import GateOptions
from broker.standin.query import IncomingRequest

__all__ = ["create_app"]

ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def _gate(request: Request) -> Gate:
    return cast(Gate, request.state.gate)


async def _to_gate(request: Request) -> Response:
    incoming = IncomingRequest(
        method=request.method,
        raw_path=cast(bytes, request.scope.get("raw_path") or b"/").decode("latin-1"),
        query_string=cast(bytes, request.scope.get("query_string", b"")).decode("latin-1"),
        headers=tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw),
        body=await request.body(),
    )
    relayed = await _gate(request).handle(incoming)
    response = Response(content=relayed.body, status_code=relayed.status)
    for name, value in relayed.headers:
        response.headers.append(name, value)
    return response


def create_app(
    moto_url: str, options: GateOptions | None = None, clock: Clock = utc_now
) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[Mapping[str, Gate]]:
        async with open_gate(moto_url, options, clock) as gate:
            yield {"gate": gate}

    routes = [*admin_routes(_gate), Route("/{path:path}", _to_gate, methods=ALL_METHODS)]
    return Starlette(routes=routes, lifespan=lifespan)
