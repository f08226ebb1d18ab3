"""Prometheus metrics: one registry per service instance (no global state) and a small ASGI
middleware that counts and times requests by listener and route template."""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Buckets sized for an in-memory service: most requests finish well under 5 ms.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "warrant_http_requests",
            "HTTP requests by listener, route and status",
            ("listener", "route", "method", "status"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "warrant_http_request_duration_seconds",
            "HTTP request latency",
            ("listener", "route"),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.grpc_requests = Counter(
            "warrant_grpc_requests",
            "gRPC calls by method and status code",
            ("method", "code"),
            registry=self.registry,
        )
        self.grpc_latency = Histogram(
            "warrant_grpc_request_duration_seconds",
            "gRPC call latency",
            ("method",),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.audit_failures = Counter(
            "warrant_audit_write_failures",
            "Audit records that could not be made durable (each refused what it would record)",
            registry=self.registry,
        )
        self.tokens_minted = Counter(
            "warrant_tokens_minted",
            "Tokens minted, by signing algorithm",
            ("alg",),
            registry=self.registry,
        )
        self.keys = Gauge(
            "warrant_signing_keys", "Keys in the store by state", ("state",), registry=self.registry
        )
        self.active_key_age = Gauge(
            "warrant_active_key_age_seconds",
            "Age of the active signing key",
            registry=self.registry,
        )
        self.sts_exchanges = Counter(
            "warrant_sts_exchanges",
            "STS exchanges by method, outcome and AWS error code",
            ("method", "outcome", "code"),
            registry=self.registry,
        )
        self.integration_lookups = Counter(
            "warrant_sandbox_integration_lookups",
            "How sandbox creation found its integration: known (this process had it), database,"
            " or stale (known, but removed meanwhile by another replica: looked up again)",
            ("source",),
            registry=self.registry,
        )
        self.vends = Counter(
            "warrant_credential_vends",
            "Credential requests from sandboxes by outcome",
            ("outcome",),
            registry=self.registry,
        )
        self.vended_remaining = Histogram(
            "warrant_vended_credential_remaining_seconds",
            "Lifetime left on credentials when they were vended",
            buckets=(300, 900, 1200, 1800, 2700, 3600, 7200, 14400, 43200),
            registry=self.registry,
        )
        self.next_rotation = Gauge(
            "warrant_seconds_to_next_rotation",
            "Seconds until the active key is due to rotate",
            registry=self.registry,
        )

    def endpoint(self) -> Callable[[Request], Response]:
        def metrics(_: Request) -> Response:
            return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)

        return metrics

    def meter(self, listener: str, *, timed: bool = True) -> RequestMeter:
        """Counts (and, if `timed`, times) one listener's requests."""
        return RequestMeter(self, listener, timed=timed)

    def middleware(self, listener: str, *, timed: bool = True) -> Callable[[ASGIApp], ASGIApp]:
        """`timed=False` counts requests without timing them: on the public listener, which
        serves pre-computed bytes, a histogram observation would be a tenth of the work."""

        def wrap(app: ASGIApp) -> ASGIApp:
            return _MetricsMiddleware(app, self.meter(listener, timed=timed))

        return wrap


class RequestMeter:
    """Records one listener's requests by route template, method and status: the middleware's
    and the hot routes' (issuer.fastpath) one way of doing it."""

    def __init__(self, metrics: Metrics, listener: str, *, timed: bool) -> None:
        self._metrics = metrics
        self._listener = listener
        self._timed = timed
        # Resolving labelled children is the expensive part; do it once per combination.
        self._counters: dict[tuple[str, str, int], Counter] = {}
        self._histograms: dict[str, Histogram] = {}

    def record(self, path: str, method: str, status: int, started: float) -> None:
        """One request to route `path`, begun at `started` (time.perf_counter())."""
        key = (path, method, status)
        counter = self._counters.get(key)
        if counter is None:
            counter = self._metrics.requests.labels(self._listener, path, method, str(status))
            self._counters[key] = counter
        counter.inc()
        if self._timed:
            histogram = self._histograms.get(path)
            if histogram is None:
                histogram = self._metrics.latency.labels(self._listener, path)
                self._histograms[path] = histogram
            histogram.observe(time.perf_counter() - started)


class _MetricsMiddleware:
    def __init__(self, app: ASGIApp, meter: RequestMeter) -> None:
        self._app = app
        self._meter = meter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self._app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            self._meter.record(path, scope["method"], status, start)
