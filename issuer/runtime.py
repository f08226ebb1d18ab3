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
from starlette.applications import Starlette

from issuer.apikeys import CachedApiKeyStore, Role, SqlApiKeyStore, ensure_bootstrap_keys
from issuer.app import InternalApi, create_internal_app, create_public_app
from issuer.audit import AuditEvent, AuditLog, FileAuditLog
from issuer.auth import Authenticator
from issuer.db import create_engine, create_schema, ping
from issuer.keyring import KeyRing
from issuer.metrics import Metrics
from issuer.minting import TokenMinter
from issuer.settings import MIN_TOKEN_TTL, Settings
from issuer.tenants import CachedTenantStore, SqlTenantStore, TenantStore
from keys.errors import KeysError
from keys.file_store import FileKeyStore
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
    settings: Settings, clock: Callable[[], datetime], audit: AuditLog
) -> KeyManager:
    store = FileKeyStore(
        settings.keys_dir,
        lock_timeout=KEY_LOCK_TIMEOUT,
        max_published=settings.policy.max_published,
    )
    return KeyManager(
        store, settings.policy, settings.key_alg, clock, on_change=audit_key_changes(audit)
    )


@dataclass
class IssuerRuntime:
    settings: Settings
    clock: Callable[[], datetime]
    engine: AsyncEngine
    key_manager: KeyManager
    keyring: KeyRing
    metrics: Metrics
    public_app: Starlette
    internal_app: Starlette  # the issuer's routes alone; the broker composes its own
    api_key_files: dict[Role, Path]
    api: InternalApi
    authenticator: Authenticator
    tenants: TenantStore
    minter: TokenMinter
    audit: FileAuditLog

    @classmethod
    async def open(
        cls, settings: Settings, clock: Callable[[], datetime] = utc_now
    ) -> IssuerRuntime:
        """Raises KeyStoreCorrupt when the key store cannot be trusted (never regenerated)."""
        # The data dir holds private keys and API keys: only the service's user may enter it.
        settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        audit = FileAuditLog(settings.audit_path, clock)
        key_manager = build_key_manager(settings, clock, audit)
        snapshot = await key_manager.ensure_initialized()
        keyring = KeyRing(
            key_manager.store,
            issuer_url=settings.issuer_url,
            max_age=int(settings.policy.jwks_max_age.total_seconds()),
        )
        keyring.install(snapshot)

        engine = create_engine(settings.database_url)
        await create_schema(engine)
        sql_keys = SqlApiKeyStore(engine, clock)
        api_key_files = await ensure_bootstrap_keys(sql_keys, settings.data_dir)
        api_keys = CachedApiKeyStore(sql_keys, ttl=API_KEY_CACHE_TTL, clock=clock)
        tenants = CachedTenantStore(
            SqlTenantStore(engine, clock), ttl=settings.tenant_cache_ttl, clock=clock
        )
        metrics = Metrics()
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
        """Scheduled rotation and pruning, then reload."""
        try:
            await self.key_manager.maintain()
        except KeysError as exc:
            log.error("scheduled key maintenance failed: %s", exc)
        await self.reload_keys()

    async def run_background(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(_every(self.settings.policy.reload_interval, self.reload_keys))
            group.create_task(_every(self.settings.maintenance_interval, self.maintain_keys))

    async def close(self) -> None:
        await self.audit.close()
        await self.engine.dispose()


async def _every(interval: timedelta, job: Callable[[], Awaitable[None]]) -> None:
    seconds = interval.total_seconds()
    while True:
        await asyncio.sleep(seconds)
        try:
            await job()
        except Exception:  # a periodic job must never stop the service; the log has the detail
            log.exception("periodic job %s failed", getattr(job, "__name__", job))
