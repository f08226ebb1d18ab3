"""HotRoutes: which routes it serves directly, and that a hot request is answered, counted, timed
and its errors mapped exactly as the Starlette app in front of it would."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from issuer.app import _error_handlers
from issuer.errors import BadRequest
from issuer.fastpath import HotRoutes, JsonAnswer, JsonEndpoint, RawEndpoint, RawRequest
from issuer.metrics import Metrics


class Seen:
    """Middleware recording the paths that went through the Starlette app."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    def middleware(self, app: ASGIApp) -> ASGIApp:
        async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http":
                self.paths.append(scope["path"])
            await app(scope, receive, send)

        return wrapped


async def echo(request: RawRequest) -> JsonAnswer:
    body = await request.body()
    if body == b"bad":
        raise BadRequest("the body must not be 'bad'; send anything else")
    if body == b"boom":
        raise RuntimeError("a bug with a secret-looking detail: AKIAEXAMPLE")
    return JsonAnswer(b'{"echo":' + str(len(body)).encode() + b"}", headers=((b"x-hot", b"1"),))


async def plain(_: Request) -> Response:
    return JSONResponse({"plain": True})


class Fixed(RawEndpoint):
    """Answers every method itself: 200 with fixed bytes to GET, 418 to anything else; raises
    for DELETE (an error the app's handlers answer)."""

    async def serve(self, scope: Scope, send: Send) -> int:
        if scope["method"] == "DELETE":
            raise BadRequest("DELETE is refused here; send GET")
        status = 200 if scope["method"] == "GET" else 418
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"fixed"})
        return status


def build(seen: Seen, metrics: Metrics, *, taken_over: bool = False) -> HotRoutes:
    routes = [
        Route("/v1/echo", JsonEndpoint(echo), methods=["POST"]),
        Route("/v1/items/{item}", JsonEndpoint(echo), methods=["POST"]),
        Route("/v1/plain", plain, methods=["GET"]),
        Route("/doc", Fixed()),
        Route("/docs/{name}", Fixed()),
    ]
    if taken_over:
        routes.insert(0, Route("/v1/echo", plain, methods=["POST"]))
        routes.insert(0, Route("/doc", plain, methods=["GET"]))
    app = Starlette(
        routes=routes,
        exception_handlers=_error_handlers(),
        middleware=[Middleware(metrics.middleware("t")), Middleware(seen.middleware)],
    )
    return HotRoutes(app, metrics, "t")


@pytest.fixture
def seen() -> Seen:
    return Seen()


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
async def client(seen: Seen, metrics: Metrics) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=build(seen, metrics))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        yield c


def requests(metrics: Metrics, path: str, method: str, status: int) -> float:
    value = metrics.registry.get_sample_value(
        "warrant_http_requests_total",
        {"listener": "t", "route": path, "method": method, "status": str(status)},
    )
    return value or 0.0


def timed(metrics: Metrics, path: str) -> float:
    value = metrics.registry.get_sample_value(
        "warrant_http_request_duration_seconds_count", {"listener": "t", "route": path}
    )
    return value or 0.0


def test_only_fixed_path_json_and_raw_endpoints_are_hot(seen: Seen, metrics: Metrics) -> None:
    assert build(seen, metrics).hot == {("POST", "/v1/echo"), ("*", "/doc")}


def test_a_route_taken_over_by_an_earlier_one_is_not_hot(seen: Seen, metrics: Metrics) -> None:
    assert build(seen, metrics, taken_over=True).hot == frozenset()


async def test_a_hot_request_skips_the_app_and_is_counted_and_timed(
    client: httpx.AsyncClient, seen: Seen, metrics: Metrics
) -> None:
    response = await client.post("/v1/echo", content=b"12345")
    assert response.status_code == 200
    assert response.json() == {"echo": 5}
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-hot"] == "1"
    assert seen.paths == []
    assert requests(metrics, "/v1/echo", "POST", 200) == 1
    assert timed(metrics, "/v1/echo") == 1


async def test_a_hot_error_is_answered_by_the_apps_handler(
    client: httpx.AsyncClient, metrics: Metrics
) -> None:
    response = await client.post("/v1/echo", content=b"bad")
    assert response.status_code == 400
    assert response.json()["message"] == "the body must not be 'bad'; send anything else"
    assert requests(metrics, "/v1/echo", "POST", 400) == 1


async def test_an_unexpected_hot_error_is_a_clean_500_with_a_request_id(
    client: httpx.AsyncClient, metrics: Metrics, caplog: pytest.LogCaptureFixture
) -> None:
    response = await client.post("/v1/echo", content=b"boom")
    assert response.status_code == 500
    body = response.json()
    assert "AKIAEXAMPLE" not in response.text
    assert body["request_id"] == response.headers["x-request-id"]
    assert requests(metrics, "/v1/echo", "POST", 500) == 1
    assert any(body["request_id"] in r.getMessage() for r in caplog.records)


async def test_everything_else_goes_through_the_app(
    client: httpx.AsyncClient, seen: Seen, metrics: Metrics
) -> None:
    assert (await client.get("/v1/plain")).json() == {"plain": True}
    wrong_method = await client.get("/v1/echo")
    assert wrong_method.status_code == 405
    assert wrong_method.headers["allow"] == "POST"
    assert (await client.post("/v1/items/7", content=b"ab")).json() == {"echo": 2}
    assert (await client.post("/v1/nowhere")).status_code == 404
    assert seen.paths == ["/v1/plain", "/v1/echo", "/v1/items/7", "/v1/nowhere"]
    assert requests(metrics, "/v1/echo", "GET", 405) == 1
    assert requests(metrics, "/v1/items/{item}", "POST", 200) == 1


async def test_a_raw_endpoint_answers_every_method_itself_and_is_counted(
    client: httpx.AsyncClient, seen: Seen, metrics: Metrics
) -> None:
    """Discovery and JWKS are raw endpoints: served without the app for every method (their
    own 405s included), counted by the status they report, timed when the listener is."""
    response = await client.get("/doc")
    assert (response.status_code, response.content) == (200, b"fixed")
    assert (await client.post("/doc")).status_code == 418
    assert seen.paths == []
    assert requests(metrics, "/doc", "GET", 200) == 1
    assert requests(metrics, "/doc", "POST", 418) == 1
    assert timed(metrics, "/doc") == 2


async def test_a_raw_endpoints_error_is_answered_by_the_apps_handler(
    client: httpx.AsyncClient, metrics: Metrics
) -> None:
    response = await client.delete("/doc")
    assert response.status_code == 400
    assert response.json()["message"] == "DELETE is refused here; send GET"
    assert requests(metrics, "/doc", "DELETE", 400) == 1


async def test_a_raw_endpoint_behind_a_template_or_an_earlier_route_goes_through_the_app(
    seen: Seen, metrics: Metrics
) -> None:
    transport = httpx.ASGITransport(app=build(seen, metrics, taken_over=True))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        assert (await c.get("/doc")).json() == {"plain": True}
        assert (await c.get("/docs/a")).content == b"fixed"
    assert seen.paths == ["/doc", "/docs/a"]
