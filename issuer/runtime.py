"""The one place that builds real objects from settings and keeps them running.

Nothing happens at import time: `IssuerRuntime.open(settings)` connects, loads and bootstraps;
`run_background()` keeps the key ring fresh and rotates on schedule; `close()` releases.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from issuer.apikeys import CachedApiKeyStore, Role, SqlApiKeyStore, ensure_bootstrap_keys
from issuer.app import InternalApi, create_internal_app, create_public_app
from issuer.audit import AuditEvent, AuditLog, CountedAuditLog, FileAuditLog
from issuer.auth import Authenticator
from issuer.db import create_engine, ping
from issuer.fastpath import HotRoutes
from issuer.key_stores import build_key_store, maintenance_turn
from issuer.keyring import KeyRing
from issuer.metrics import Metrics
from issuer.migrations import prepare as prepare_schema
from issuer.minting import TokenMinter
from issuer.publish import AutoPublisher
from issuer.settings import MIN_TOKEN_TTL, Settings
from issuer.tenants import CachedTenantStore, SqlTenantStore, TenantStore
from keys.custody import Closeable
from keys.errors import KeysError
from keys.manager import KeyChange, KeyChangeHook, KeyManager
from keys.model import KeyState

log = logging.getLogger(__name__)

# A revoked API key may still authenticate in another process for this long.
API_KEY_CACHE_TTL = timedelta(seconds=5)
# The CLI and the service share the store lock; wait this long before giving up.
KEY_LOCK_TIMEOUT = timedelta(seconds=10)


def utc_now() -> datetime:
    return datetime.now(UTC)


def audit_key_changes(audit: AuditLog) -> KeyChangeHook:
    async def record(change: KeyChange) -> None:
        await audit.write(AuditEvent(event=change.event, outcome="ok", detail=change.detail))

    return record


def build_key_manager(
    settings: Settings,
    clock: Callable[[], datetime],
    audit: AuditLog,
    engine: AsyncEngine | None = None,
) -> KeyManager:
    """The key manager on the store WARRANT_KEY_STORE names. A database or KMS store uses
    `engine`; without one (the command line) it opens the database for each call."""
    store = build_key_store(settings, engine, lock_timeout=KEY_LOCK_TIMEOUT)
    return KeyManager(
        store, settings.policy, settings.key_alg, clock, on_change=audit_key_changes(audit)
    )


async def close_key_store(store: object) -> None:
    """Release what a key store holds (a KMS client); stores holding nothing are left alone."""
    if isinstance(store, Closeable):
        await store.aclose()


@dataclass
class IssuerRuntime:
    settings: Settings
    clock: Callable[[], datetime]
    engine: AsyncEngine
    key_manager: KeyManager
    keyring: KeyRing
    metrics: Metrics
    public_app: HotRoutes
    internal_app: HotRoutes  # the issuer's routes alone; the broker composes its own
    api_key_files: dict[Role, Path]
    api: InternalApi
    authenticator: Authenticator
    tenants: TenantStore
    minter: TokenMinter
    audit: AuditLog
    publisher: AutoPublisher | None = None  # WARRANT_PUBLISH_S3_BUCKET: copies to S3

    @classmethod
    async def open(
        cls, settings: Settings, clock: Callable[[], datetime] = utc_now
    ) -> IssuerRuntime:
        """Raises KeyStoreCorrupt when the key store cannot be trusted (never regenerated)."""
        # The data dir holds private keys and API keys: only the service's user may enter it.
        settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        metrics = Metrics()
        audit = CountedAuditLog(
            FileAuditLog(settings.audit_path, clock), metrics.audit_failures.inc
        )
        engine = create_engine(settings.database_url, settings.database_pool)
        key_manager: KeyManager | None = None
        try:
            # Upgrades the schema (or, with WARRANT_DATABASE_AUTO_MIGRATE off, refuses to start
            # when it is behind); an unreachable database fails here, naming the setting.
            await prepare_schema(engine, auto_migrate=settings.database_auto_migrate)
            # Before the keys: with WARRANT_KEY_STORE=database or kms they live in this database.
            key_manager = build_key_manager(settings, clock, audit, engine=engine)
            snapshot = await key_manager.ensure_initialized()
        except BaseException:
            if key_manager is not None:
                await close_key_store(key_manager.store)
            await engine.dispose()
            raise
        keyring = KeyRing(
            key_manager.store,
            issuer_url=settings.issuer_url,
            max_age=int(settings.policy.jwks_max_age.total_seconds()),
        )
        keyring.install(snapshot)

        sql_keys = SqlApiKeyStore(engine, clock)
        api_key_files = await ensure_bootstrap_keys(sql_keys, settings.data_dir)
        api_keys = CachedApiKeyStore(sql_keys, ttl=API_KEY_CACHE_TTL)
        tenants = CachedTenantStore(SqlTenantStore(engine, clock), ttl=settings.tenant_cache_ttl)
        minter = TokenMinter(
            issuer_url=settings.issuer_url,
            keyring=keyring,
            tenants=tenants,
            clock=clock,
            default_ttl=settings.token_default_ttl,
            max_ttl=settings.token_max_ttl,
            min_ttl=MIN_TOKEN_TTL,
            audit=audit,
        )

        async def ready() -> dict[str, bool]:
            return {"database": await ping(engine), "signing_key": keyring.can_sign}

        authenticator = Authenticator(api_keys)
        api = InternalApi(
            auth=authenticator,
            minter=minter,
            tenants=tenants,
            keyring=keyring,
            key_manager=key_manager,
            policy=settings.policy,
            metrics=metrics,
            ready=ready,
        )
        runtime = cls(
            settings=settings,
            clock=clock,
            engine=engine,
            key_manager=key_manager,
            keyring=keyring,
            metrics=metrics,
            public_app=create_public_app(keyring, metrics),
            internal_app=create_internal_app(api, metrics),
            api_key_files=api_key_files,
            api=api,
            authenticator=authenticator,
            tenants=tenants,
            minter=minter,
            audit=audit,
            publisher=None
            if settings.publish is None
            else AutoPublisher(
                settings.publish,
                issuer_url=settings.issuer_url,
                endpoint_url=settings.aws_endpoint,
                clock=clock,
            ),
        )
        runtime.update_key_metrics()
        return runtime

    def update_key_metrics(self) -> None:
        snapshot = self.keyring.snapshot
        for state in KeyState:
            self.metrics.keys.labels(state.value).set(
                sum(1 for r in snapshot.records if r.state is state)
            )
        active = snapshot.active()
        if active is not None and active.activated_at is not None:
            now = self.clock()
            self.metrics.active_key_age.set((now - active.activated_at).total_seconds())
            due = active.activated_at + self.settings.policy.rotation_period
            self.metrics.next_rotation.set(max(0.0, (due - now).total_seconds()))

    async def reload_keys(self) -> None:
        """Pick up changes another process (the CLI, another replica) made to the store."""
        try:
            if await self.keyring.refresh():
                self.update_key_metrics()
        except KeysError as exc:
            # Keep serving the last good key set; an operator must repair the store.
            log.error("key store reload failed, still serving the previous key set: %s", exc)

    async def maintain_keys(self) -> None:
        """Scheduled rotation and pruning, then reload. With keys in a shared PostgreSQL
        database, only the replica holding the maintenance lock runs it (see maintenance_turn)."""
        async with maintenance_turn(self.engine, self.settings.key_store.shared) as mine:
            if mine:
                try:
                    await self.key_manager.maintain()
                except KeysError as exc:
                    log.error("scheduled key maintenance failed: %s", exc)
        await self.reload_keys()

    async def publish_keys(self) -> None:
        """Copy the documents served now to S3 when they changed since the last copy. A task of
        its own, so a slow or unreachable S3 never delays reloading the key set."""
        if self.publisher is not None:
            await self.publisher.sync(self.keyring.discovery, self.keyring.jwks)

    async def run_background(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(_every(self.settings.policy.reload_interval, self.reload_keys))
            group.create_task(_every(self.settings.maintenance_interval, self.maintain_keys))
            if self.publisher is not None:
                group.create_task(_every(self.settings.policy.reload_interval, self.publish_keys))

    async def close(self) -> None:
        if self.publisher is not None:
            await self.publisher.close()
        await self.audit.close()
        await close_key_store(self.key_manager.store)
        await self.engine.dispose()


async def _every(interval: timedelta, job: Callable[[], Awaitable[None]]) -> None:
    seconds = interval.total_seconds()
    while True:
        await asyncio.sleep(seconds)
        try:
            await job()
        except Exception:  # a periodic job must never stop the service; the log has the detail
            log.exception("periodic job %s failed", getattr(job, "__name__", job))
