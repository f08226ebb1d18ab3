"""Raw-ASGI JSON endpoints for the hot paths (minting, vending), raw endpoints that answer by
themselves (discovery and JWKS), and `HotRoutes`, which serves both in front of their Starlette
app.

The happy path builds no Request or Response objects: headers are read from the ASGI scope, the
body from `receive`, and the answer is pre-encoded bytes. Errors are raised as usual and reach
the app's own exception handlers (`issuer.http.handle_error`), which are not a hot path.

Measured (bench/, one CPU): Starlette's request/response objects cost about a third of a mint's
non-signing time; its middleware stack and router about 10 us per request more, a third of a
cached vend. So a hot route is dispatched by one dictionary lookup on (method, path) and timed and
counted here, with the same metric labels the middleware uses; every other request, and every
error, goes through the Starlette app exactly as before.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Route
from starlette.types import Receive, Scope, Send

from issuer.errors import BadRequest
from issuer.http import MAX_BODY_BYTES, check_declared_length
from issuer.logs import bind_request_id
from issuer.metrics import Metrics

_JSON = (b"content-type", b"application/json")


@dataclass(frozen=True, slots=True)
class RawRequest:
    scope: Scope
    headers: Mapping[bytes, bytes]  # ASGI names are lower-case
    receive: Receive

    def header(self, name: bytes) -> str | None:
        value = self.headers.get(name)
        return None if value is None else value.decode("latin-1")

    @property
    def request_id(self) -> str:
        """The id that ties this request's log lines, audit record and any error together."""
        return bind_request_id(self.scope)

    async def body(self) -> bytes:
        check_declared_length(self.header(b"content-length"))
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await self.receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise BadRequest(f"request body must be at most {MAX_BODY_BYTES} bytes")
            chunks.append(chunk)
            more = message.get("more_body", False)
        return b"".join(chunks)


@dataclass(frozen=True, slots=True)
class JsonAnswer:
    body: bytes
    status: int = 200
    headers: Sequence[tuple[bytes, bytes]] = ()


class JsonEndpoint:
    """Wraps `handler(request) -> JsonAnswer` as an ASGI app (mount it with a Starlette Route,
    which still routes, checks methods and maps errors)."""

    def __init__(self, handler: Callable[[RawRequest], Awaitable[JsonAnswer]]) -> None:
        self._handler = handler

    @property
    def handler(self) -> Callable[[RawRequest], Awaitable[JsonAnswer]]:
        return self._handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        answer = await self._handler(RawRequest(scope, dict(scope["headers"]), receive))
        await _send_answer(send, answer)


async def _send_answer(send: Send, answer: JsonAnswer) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": answer.status,
            "headers": [
                _JSON,
                (b"content-length", str(len(answer.body)).encode()),
                *answer.headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": answer.body})


class RawEndpoint:
    """An ASGI endpoint that answers by itself and says with which status; `HotRoutes` serves
    it for every method of its path without Starlette's middleware and router."""

    async def serve(self, scope: Scope, send: Send) -> int:
        """Answer the request in `scope` (it has no body to read); the status sent."""
        raise NotImplementedError

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.serve(scope, send)


# The apps' exception handlers are all coroutines returning a Response (issuer.http).
ExceptionHandler = Callable[[Request, Exception], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class _Hot:
    handler: Callable[[RawRequest], Awaitable[JsonAnswer]]
    path: str  # the route template, the metrics' `route` label


class HotRoutes:
    """An ASGI app serving `app`, with its JsonEndpoint and RawEndpoint routes dispatched
    directly.

    A JsonEndpoint route (a fixed path, no parameters) becomes hot for each of its methods but
    HEAD, provided `app`'s router would send that method and path to it (an earlier route that
    takes them over keeps them); a RawEndpoint route, for every method of its path, provided
    `app`'s router would send a GET there to it. A hot request skips Starlette's middleware and
    router: it is
    recorded here by the same RequestMeter the metrics middleware uses (timed unless `timed` is
    false), and an exception it raises is answered by `app`'s own exception handler for that
    class. Every other request goes to `app` unchanged.
    """

    def __init__(self, app: Starlette, metrics: Metrics, listener: str, *, timed: bool = True):
        self.app = app
        self._meter = metrics.meter(listener, timed=timed)
        self._hot: dict[tuple[str, str], _Hot] = {}
        self._raw: dict[str, RawEndpoint] = {}
        for route in app.routes:
            if not isinstance(route, Route) or route.param_convertors:
                continue  # a template is not a path a request can name
            if isinstance(route.endpoint, RawEndpoint):
                if _first_match(app.routes, "GET", route.path) is route:
                    self._raw[route.path] = route.endpoint
                continue
            if not isinstance(route.endpoint, JsonEndpoint):
                continue
            for method in route.methods or ():
                if method != "HEAD" and _first_match(app.routes, method, route.path) is route:
                    self._hot[(method, route.path)] = _Hot(route.endpoint.handler, route.path)

    @property
    def routes(self) -> list[BaseRoute]:
        return self.app.routes

    @property
    def hot(self) -> frozenset[tuple[str, str]]:
        """(method, path) pairs served directly; "*" for every method of a raw endpoint's."""
        return frozenset(self._hot) | {("*", path) for path in self._raw}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            hot = self._hot.get((scope["method"], scope["path"]))
            if hot is not None:
                await self._serve(hot, scope, receive, send)
                return
            raw = self._raw.get(scope["path"])
            if raw is not None:
                await self._serve_raw(raw, scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _serve_raw(
        self, endpoint: RawEndpoint, scope: Scope, receive: Receive, send: Send
    ) -> None:
        start = time.perf_counter()
        status = 500
        try:
            try:
                status = await endpoint.serve(scope, send)
            except Exception as exc:
                response = await self._handler_for(exc)(Request(scope, receive), exc)
                status = response.status_code
                await response(scope, receive, send)
        finally:
            self._meter.record(scope["path"], scope["method"], status, start)

    async def _serve(self, hot: _Hot, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        status = 500
        try:
            try:
                answer = await hot.handler(RawRequest(scope, dict(scope["headers"]), receive))
            except Exception as exc:
                response = await self._handler_for(exc)(Request(scope, receive), exc)
                status = response.status_code
                await response(scope, receive, send)
            else:
                status = answer.status
                await _send_answer(send, answer)
        finally:
            self._meter.record(hot.path, scope["method"], status, start)

    def _handler_for(self, exc: Exception) -> ExceptionHandler:
        """`app`'s handler for the nearest class of `exc`, as Starlette looks it up. Every app
        here registers one for Exception; one that did not would let the error through."""
        handlers: Mapping[Any, ExceptionHandler] = self.app.exception_handlers
        for cls in type(exc).__mro__:
            if cls in handlers:
                return handlers[cls]
        raise exc


def _first_match(routes: Sequence[BaseRoute], method: str, path: str) -> BaseRoute | None:
    scope: dict[str, Any] = {"type": "http", "method": method, "path": path, "root_path": ""}
    for route in routes:
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return route
    return None


__all__ = ["HotRoutes", "JsonAnswer", "JsonEndpoint", "RawEndpoint", "RawRequest"]
