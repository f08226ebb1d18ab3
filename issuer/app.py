"""The issuer's two listeners as Starlette apps.

public   — what AWS STS and other verifiers fetch: discovery, JWKS, health. Nothing else exists
           here, so exposing it to the internet can never expose minting or admin.
internal — agents and operators: minting, tenants, keys, health, readiness, metrics.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import Scope, Send

from issuer.apikeys import Role
from issuer.auth import Authenticator
from issuer.discovery import AUTHORIZE_PATH, DISCOVERY_PATH, JWKS_PATH
from issuer.documents import StaticDocument
from issuer.errors import IssuerError
from issuer.fastpath import HotRoutes, JsonAnswer, JsonEndpoint, RawEndpoint, RawRequest
from issuer.http import (
    handle_error,
    iso,
    optional_bool,
    optional_int,
    optional_str,
    parse_json_object,
    read_json_object,
    required_str,
)
from issuer.keyring import KeyRing
from issuer.metrics import Metrics
from issuer.minting import TokenMinter
from issuer.tenants import Tenant, TenantStore, audience_for
from keys.errors import KeysError
from keys.manager import KeyManager
from keys.model import KeyRecord, KeyState, RotationPolicy

MINT_FIELDS = frozenset({"tenant", "subject", "ttl_seconds"})
_JSON_405 = json.dumps(
    {"error": "method_not_allowed", "message": "only GET and HEAD are allowed here"}
).encode()


class DocumentEndpoint(RawEndpoint):
    """Serves a pre-computed document: GET, HEAD, If-None-Match -> 304, anything else 405."""

    def __init__(self, document: Callable[[], StaticDocument]) -> None:
        self._document = document

    async def serve(self, scope: Scope, send: Send) -> int:
        method = scope["method"]
        if method not in ("GET", "HEAD"):
            await send(
                {
                    "type": "http.response.start",
                    "status": 405,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"allow", b"GET, HEAD"),
                        (b"content-length", str(len(_JSON_405)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": _JSON_405})
            return 405
        document = self._document()
        if_none_match = None
        for name, value in scope["headers"]:
            if name == b"if-none-match":
                if_none_match = value.decode("latin-1")
                break
        if if_none_match is not None and document.matches(if_none_match):
            await send(
                {
                    "type": "http.response.start",
                    "status": 304,
                    "headers": document.not_modified_headers,
                }
            )
            await send({"type": "http.response.body", "body": b""})
            return 304
        await send({"type": "http.response.start", "status": 200, "headers": document.headers})
        await send(
            {"type": "http.response.body", "body": b"" if method == "HEAD" else document.body}
        )
        return 200


def _healthz(_: Request) -> Response:
    return JSONResponse({"status": "ok"})


def _authorize(_: Request) -> Response:
    return JSONResponse(
        {
            "error": "unsupported_response_type",
            "error_description": "this issuer mints tokens only for its own workloads; there is no "
            "interactive authorization",
        },
        status_code=400,
    )


def _error_handlers() -> dict[Any, Callable[[Request, Exception], Awaitable[Response]]]:
    # Our errors (and keys' errors) are answered by class; `Exception` is Starlette's last-resort
    # 500 path, which answers with a request id and re-raises so the server logs the detail.
    return {
        IssuerError: handle_error,
        KeysError: handle_error,
        HTTPException: handle_error,
        Exception: handle_error,
    }


def create_public_app(keyring: KeyRing, metrics: Metrics) -> HotRoutes:
    """Discovery and the JWKS are served directly (`HotRoutes`: no middleware or router, a
    dictionary lookup on the path), counted as the middleware counts everything else."""
    routes: list[BaseRoute] = [
        Route(DISCOVERY_PATH, DocumentEndpoint(lambda: keyring.discovery)),
        Route(JWKS_PATH, DocumentEndpoint(lambda: keyring.jwks)),
        Route(AUTHORIZE_PATH, _authorize, methods=["GET", "POST"]),
        Route("/healthz", _healthz, methods=["GET", "HEAD"]),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers=_error_handlers(),
        middleware=[Middleware(metrics.middleware("public", timed=False))],
    )
    return HotRoutes(app, metrics, "public", timed=False)


def tenant_json(tenant: Tenant) -> dict[str, Any]:
    return {
        "slug": tenant.slug,
        "name": tenant.name,
        "audience": audience_for(tenant.slug),
        "created_at": iso(tenant.created_at),
    }


def key_json(record: KeyRecord, policy: RotationPolicy) -> dict[str, Any]:
    retire_after = (
        record.retired_at + policy.retire_for
        if record.state is KeyState.RETIRED and record.retired_at
        else None
    )
    return {
        "kid": record.kid,
        "alg": record.alg.value,
        "state": record.state.value,
        "created_at": iso(record.created_at),
        "activated_at": iso(record.activated_at),
        "retired_at": iso(record.retired_at),
        "revoked_at": iso(record.revoked_at),
        "retire_after": iso(retire_after),
    }


class InternalApi:
    """Handlers of the internal listener: parse, authorize, call a collaborator, shape JSON."""

    def __init__(
        self,
        *,
        auth: Authenticator,
        minter: TokenMinter,
        tenants: TenantStore,
        keyring: KeyRing,
        key_manager: KeyManager,
        policy: RotationPolicy,
        metrics: Metrics,
        ready: Callable[[], Awaitable[dict[str, bool]]],
    ) -> None:
        self._auth = auth
        self._minter = minter
        self._tenants = tenants
        self._keyring = keyring
        self._keys = key_manager
        self._policy = policy
        self._metrics = metrics
        self._ready = ready

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/v1/tokens", JsonEndpoint(self.mint), methods=["POST"]),
            Route("/v1/tenants", self.list_tenants, methods=["GET"]),
            Route("/v1/tenants", self.add_tenant, methods=["POST"]),
            Route("/v1/tenants/{slug}", self.get_tenant, methods=["GET"]),
            Route("/v1/tenants/{slug}", self.remove_tenant, methods=["DELETE"]),
            Route("/v1/keys", self.list_keys, methods=["GET"]),
            Route("/v1/keys/rotate", self.rotate_keys, methods=["POST"]),
            Route("/v1/keys/prune", self.prune_keys, methods=["POST"]),
            Route("/v1/keys/{kid}/revoke", self.revoke_key, methods=["POST"]),
            Route("/healthz", _healthz, methods=["GET", "HEAD"]),
            Route("/readyz", self.readyz, methods=["GET", "HEAD"]),
            Route("/metrics", self._metrics.endpoint(), methods=["GET"]),
        ]

    async def mint(self, request: RawRequest) -> JsonAnswer:
        """The hot path, served raw (see issuer.fastpath)."""
        await self._auth.require_header(request.header(b"authorization"), Role.AGENT)
        body = parse_json_object(await request.body(), MINT_FIELDS)
        minted = await self._minter.mint(
            required_str(body, "tenant"),
            optional_str(body, "subject"),
            optional_int(body, "ttl_seconds"),
        )
        self._metrics.tokens_minted.labels(minted.alg).inc()
        answer = {"token": minted.token, "expires_at": iso(minted.expires_at), "kid": minted.kid}
        return JsonAnswer(json.dumps(answer, separators=(",", ":")).encode())

    async def list_tenants(self, request: Request) -> Response:
        await self._auth.require(request, Role.ADMIN)
        return JSONResponse({"tenants": [tenant_json(t) for t in await self._tenants.list()]})

    async def add_tenant(self, request: Request) -> Response:
        await self._auth.require(request, Role.ADMIN)
        body = await read_json_object(request, frozenset({"slug", "name"}))
        tenant = await self._tenants.add(required_str(body, "slug"), optional_str(body, "name"))
        return JSONResponse(tenant_json(tenant), status_code=201)

    async def get_tenant(self, request: Request) -> Response:
        await self._auth.require(request, Role.ADMIN)
        return JSONResponse(tenant_json(await self._tenants.get(request.path_params["slug"])))

    async def remove_tenant(self, request: Request) -> Response:
        await self._auth.require(request, Role.ADMIN)
        await self._tenants.remove(request.path_params["slug"])
        return Response(status_code=204)

    async def list_keys(self, request: Request) -> Response:
        await self._auth.require(request, Role.ADMIN)
        records = await self._keys.list()
        return JSONResponse({"keys": [key_json(r, self._policy) for r in records]})

    async def rotate_keys(self, request: Request) -> Response:
        await self._auth.require(request, Role.ADMIN)
        body = await read_json_object(request, frozenset({"force"}))
        outcome = await self._keys.rotate(force=optional_bool(body, "force"))
        await self._keyring.refresh()
        return JSONResponse(
            {
                "active_kid": self._keyring.signer().kid,
                "retired_kid": outcome.retired_kid,
                "forced": outcome.forced,
                "warning": outcome.warning,
            }
        )

    async def revoke_key(self, request: Request) -> Response:
        await self._auth.require(request, Role.ADMIN)
        outcome = await self._keys.revoke(request.path_params["kid"])
        await self._keyring.refresh()
        return JSONResponse(
            {
                "revoked_kid": request.path_params["kid"],
                "active_kid": self._keyring.signer().kid,
                "message": outcome.message,
            }
        )

    async def prune_keys(self, request: Request) -> Response:
        await self._auth.require(request, Role.ADMIN)
        removed = await self._keys.prune()
        await self._keyring.refresh()
        return JSONResponse({"removed": list(removed)})

    async def readyz(self, _: Request) -> Response:
        checks = await self._ready()
        ok = all(checks.values())
        return JSONResponse({"ready": ok, "checks": checks}, status_code=200 if ok else 503)


def create_internal_app(
    api: InternalApi, metrics: Metrics, extra_routes: Sequence[BaseRoute] = ()
) -> HotRoutes:
    """`extra_routes` come first, so a layer above may take over one of ours (the broker
    handles tenant removal, which must revoke sandboxes too). Minting is served hot."""
    app = Starlette(
        routes=[*extra_routes, *api.routes()],
        exception_handlers=_error_handlers(),
        middleware=[Middleware(metrics.middleware("internal"))],
    )
    return HotRoutes(app, metrics, "internal")
