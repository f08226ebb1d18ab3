"""The composition root: builds the issuer and the broker from settings and joins them.

Nothing happens at import time. `WarrantRuntime.open(...)` connects and loads everything;
`listeners()` and `services()` say what to serve; `close()` releases every client and file.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import httpx

from broker.cache import CachedSource
from broker.connection import ConnectionTester
from broker.connection_store import SqlConnectionStore
from broker.delivery.grpc_api import CredentialBrokerServicer
from broker.delivery.grpc_server import GrpcServer
from broker.delivery.http import BrokerApi, create_sandbox_app
from broker.delivery.openapi import internal_document
from broker.errors import CredentialsUnavailable
from broker.imds import ImdsClient
from broker.integrations import SqlIntegrationStore
from broker.metrics import CacheCollector
from broker.sandboxes import CachedSandboxAuth, SqlSandboxStore
from broker.service import BrokerService
from broker.settings import SANDBOX_AUTH_CACHE_TTL, BrokerSettings
from broker.sources.assume_role import AssumeRoleSource
from broker.sources.audited import AuditedSource
from broker.sources.instance_role import InstanceRoleSource
from broker.sources.router import MethodRouter
from broker.sources.web_identity import WebIdentitySource
from broker.sts import StsClients
from issuer.app import create_internal_app
from issuer.audit import AuditLog
from issuer.fastpath import HotRoutes
from issuer.minting import TokenMinter
from issuer.openapi import openapi_route
from issuer.runtime import IssuerRuntime, utc_now
from issuer.server import Listener, Service
from issuer.settings import Settings

# IMDS answers in microseconds on a healthy instance; a slow IMDS is a broken one.
IMDS_TIMEOUT = httpx.Timeout(1.0)

log = logging.getLogger(__name__)


class MinterTokenProvider:
    """The issuer's minter, seen by the broker only through the TokenProvider protocol."""

    def __init__(self, minter: TokenMinter) -> None:
        self._minter = minter

    async def token_for(self, tenant: str, subject: str) -> str:
        return (await self._minter.mint(tenant, subject)).token


@dataclass
class WarrantRuntime:
    issuer: IssuerRuntime
    broker_settings: BrokerSettings
    service: BrokerService
    cache: CachedSource
    audit: AuditLog
    internal_app: HotRoutes
    sandbox_app: HotRoutes
    grpc_server: GrpcServer | None
    _sts: StsClients
    _imds_http: httpx.AsyncClient

    @classmethod
    async def open(
        cls,
        settings: Settings,
        broker_settings: BrokerSettings,
        clock: Callable[[], datetime] = utc_now,
    ) -> WarrantRuntime:
        issuer = await IssuerRuntime.open(settings, clock)
        bs = broker_settings
        audit = issuer.audit
        sts = StsClients(endpoint_url=bs.sts_endpoint)
        imds_http = httpx.AsyncClient(timeout=IMDS_TIMEOUT)
        router = MethodRouter(
            oidc=WebIdentitySource(MinterTokenProvider(issuer.minter), sts),
            instance_role=AssumeRoleSource(
                InstanceRoleSource(ImdsClient(imds_http, bs.imds_endpoint)), sts
            ),
        )
        cache = CachedSource(
            AuditedSource(router, audit, issuer.metrics),
            clock=clock,
            floor=bs.credential_floor,
            refresh_ahead=bs.refresh_ahead,
        )
        floor_seconds = int(bs.credential_floor.total_seconds())
        integrations = SqlIntegrationStore(issuer.engine, clock, floor_seconds=floor_seconds)
        sandboxes = SqlSandboxStore(issuer.engine, clock)
        service = BrokerService(
            tenants=issuer.tenants,
            integrations=integrations,
            sandboxes=sandboxes,
            sandbox_auth=CachedSandboxAuth(sandboxes, ttl=SANDBOX_AUTH_CACHE_TTL, clock=clock),
            source=cache,
            audit=audit,
            clock=clock,
            settings=bs,
            metrics=issuer.metrics,
            issuer_url=settings.issuer_url,
            dev=settings.dev,
            tester=ConnectionTester(cache, clock=clock, endpoint_url=bs.aws_endpoint),
            connections=SqlConnectionStore(issuer.engine),
        )
        issuer.metrics.registry.register(CacheCollector(cache))
        api = BrokerApi(auth=issuer.authenticator, service=service, clock=clock)
        grpc_server = None
        if bs.grpc is not None:
            servicer = CredentialBrokerServicer(
                auth=issuer.authenticator,
                minter=issuer.minter,
                service=service,
                metrics=issuer.metrics,
                clock=clock,
            )
            grpc_server = GrpcServer(servicer, bs.grpc)
        return cls(
            issuer=issuer,
            broker_settings=bs,
            service=service,
            cache=cache,
            audit=audit,
            internal_app=create_internal_app(
                issuer.api, issuer.metrics, [*api.routes(), openapi_route(internal_document())]
            ),
            sandbox_app=create_sandbox_app(service, issuer.metrics),
            grpc_server=grpc_server,
            _sts=sts,
            _imds_http=imds_http,
        )

    def listeners(self) -> list[Listener]:
        s, bs = self.issuer.settings, self.broker_settings
        return [
            Listener(
                "public",
                self.issuer.public_app,
                s.public_addr,
                "WARRANT_PUBLIC_ADDR",
                stop_last=True,
            ),
            Listener(
                "internal",
                self.internal_app,
                s.internal_addr,
                "WARRANT_INTERNAL_ADDR",
                tls=bs.internal_tls,
            ),
            Listener(
                "sandbox",
                self.sandbox_app,
                bs.sandbox_addr,
                "WARRANT_SANDBOX_ADDR",
                tls=bs.sandbox_tls,
            ),
        ]

    def services(self) -> list[Service]:
        """Non-ASGI listeners: the gRPC API unless WARRANT_GRPC_ADDR=off."""
        return [] if self.grpc_server is None else [self.grpc_server]

    async def run_background(self) -> None:
        # The AWS SDK, deferred from start-up, is imported now on a worker thread (the loop
        # keeps serving), with what STS clients read, so the first exchange finds it ready;
        # then it is frozen out of the collector's reach with the rest of the heap.
        try:
            await self._sts.prepare()
        except CredentialsUnavailable as exc:  # the SDK's configuration: the first exchange
            log.warning("%s", exc)  # tries again and answers 503 with the same message
        gc.freeze()
        await self.issuer.run_background()

    async def close(self) -> None:
        await self.cache.close()
        await self._sts.close()
        await self._imds_http.aclose()
        await self.issuer.close()
