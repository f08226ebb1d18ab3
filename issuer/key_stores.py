"""Which KeyStore the settings ask for, and the lock that gives key maintenance to one replica.

WARRANT_KEY_STORE=file      FileKeyStore in $WARRANT_DATA_DIR/keys: one host
WARRANT_KEY_STORE=database  SqlKeyStore; private keys sealed under WARRANT_KEY_ENCRYPTION_KEY
WARRANT_KEY_STORE=kms       SqlKeyStore; private keys in AWS KMS (WARRANT_KMS_REGION). Keys
                            sealed by an earlier database store stay usable while
                            WARRANT_KEY_ENCRYPTION_KEY is set, and rotate out naturally.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from issuer.db import create_engine
from issuer.errors import IssuerError
from issuer.key_store_sql import DEFAULT_LOCK_TIMEOUT, SqlKeyStore
from issuer.migrations import prepare as prepare_schema
from issuer.settings import KeyStoreKind, Settings
from keys.custody import Custodian
from keys.errors import KeysError
from keys.file_store import FileKeyStore
from keys.kms_custody import KmsConnection, KmsCustodian
from keys.protocols import KeySnapshot, KeyStore, Planner
from keys.sealed import SealedCustodian

__all__ = [
    "MAINTENANCE_LOCK_KEY",
    "OneShotKeyStore",
    "build_key_store",
    "maintenance_turn",
    "sql_key_store",
]

log = logging.getLogger(__name__)

# The maintenance job's PostgreSQL advisory lock: a fixed 64-bit number no other Warrant lock
# uses ("WMaintKy" in ASCII). The key store's and the migrations' locks are others.
MAINTENANCE_LOCK_KEY = 0x574D_6169_6E74_4B79


def build_key_store(
    settings: Settings,
    engine: AsyncEngine | None,
    *,
    lock_timeout: timedelta = DEFAULT_LOCK_TIMEOUT,
) -> KeyStore:
    """The store WARRANT_KEY_STORE names. A database store without an `engine` (the command
    line) opens the database, and KMS, for each call and closes them afterwards."""
    if settings.key_store.kind is KeyStoreKind.FILE:
        return FileKeyStore(
            settings.keys_dir,
            lock_timeout=lock_timeout,
            max_published=settings.policy.max_published,
        )
    if engine is None:
        return OneShotKeyStore(lambda: _opened(settings, lock_timeout))
    return sql_key_store(settings, engine, lock_timeout=lock_timeout)


def sql_key_store(
    settings: Settings, engine: AsyncEngine, *, lock_timeout: timedelta = DEFAULT_LOCK_TIMEOUT
) -> SqlKeyStore:
    """A database or KMS key store on `engine`, from the validated settings."""
    config = settings.key_store
    sealed = (
        None if config.key_encryption_key is None else SealedCustodian(config.key_encryption_key)
    )
    custodian: Custodian
    readers: tuple[Custodian, ...] = ()
    if config.kind is KeyStoreKind.KMS:
        if config.kms_region is None:
            raise KeysError("WARRANT_KEY_STORE=kms needs WARRANT_KMS_REGION")
        tags = {"warrant:issuer": settings.issuer_url} if settings.issuer_url else {}
        connection = KmsConnection(region=config.kms_region, endpoint_url=config.kms_endpoint)
        custodian = KmsCustodian(connection, tags=tags)
        readers = () if sealed is None else (sealed,)
    elif sealed is not None:
        custodian = sealed
    else:
        raise KeysError("WARRANT_KEY_STORE=database needs WARRANT_KEY_ENCRYPTION_KEY")
    return SqlKeyStore(
        engine,
        custodian,
        readers=readers,
        max_published=settings.policy.max_published,
        lock_timeout=lock_timeout,
    )


class OneShotKeyStore:
    """A KeyStore that opens its backing store for every call and closes it afterwards.

    For the command line, which builds its KeyManager synchronously and never closes it: an
    engine or KMS client left open would keep the process alive (aiosqlite runs a thread per
    connection) or complain at exit. The snapshots it returns are for reading; their signers'
    clients are closed.
    """

    def __init__(self, open_store: Callable[[], AbstractAsyncContextManager[KeyStore]]) -> None:
        self._open = open_store

    async def load(self) -> KeySnapshot:
        async with self._open() as store:
            return await store.load()

    async def revision(self) -> str:
        async with self._open() as store:
            return await store.revision()

    async def apply(self, planner: Planner) -> KeySnapshot:
        async with self._open() as store:
            return await store.apply(planner)

    def __repr__(self) -> str:
        return "OneShotKeyStore()"


@contextlib.asynccontextmanager
async def _opened(settings: Settings, lock_timeout: timedelta) -> AsyncIterator[KeyStore]:
    engine = create_engine(settings.database_url, settings.database_pool)
    store: SqlKeyStore | None = None
    try:
        try:
            await prepare_schema(engine, auto_migrate=settings.database_auto_migrate)
        except IssuerError as exc:
            # The keys commands report KeysError as one line; say the same thing that way.
            raise KeysError(str(exc)) from exc
        store = sql_key_store(settings, engine, lock_timeout=lock_timeout)
        yield store
    finally:
        if store is not None:
            await store.aclose()
        await engine.dispose()


@contextlib.asynccontextmanager
async def maintenance_turn(engine: AsyncEngine, shared: bool) -> AsyncIterator[bool]:
    """Whether this process runs scheduled key maintenance now (hold it for the whole job).

    With keys in a shared PostgreSQL database (`shared`: WARRANT_KEY_STORE=database or kms),
    replicas take turns: the one whose `pg_try_advisory_lock` succeeds, on a connection held
    for the job, runs it; the others skip this round and pick the result up on their next
    reload. Correctness does not depend on it (every change is planned under the store's own
    lock on the rows as committed), but without it every replica would take the store's lock
    every interval and race to create the same pending key's worth of work. A file store or
    SQLite lives on one host, where the store's own lock is enough: always True.
    """
    if not shared or engine.dialect.name != "postgresql":
        yield True
        return
    try:
        conn = await engine.connect()
    except (SQLAlchemyError, OSError, TimeoutError) as exc:
        log.warning("key maintenance skipped: the database is unavailable (%s)", type(exc).__name__)
        yield False
        return
    try:
        try:
            held = bool(await conn.scalar(select(func.pg_try_advisory_lock(MAINTENANCE_LOCK_KEY))))
            # The session lock outlives the transaction; do not sit idle in one during the job.
            await conn.commit()
        except (SQLAlchemyError, OSError, TimeoutError) as exc:
            log.warning("key maintenance skipped: cannot take its lock (%s)", type(exc).__name__)
            await conn.invalidate()
            held = False
        if not held:
            log.debug("key maintenance: another replica holds the lock; skipping this round")
        try:
            yield held
        finally:
            if held:
                await _unlock(conn)
    finally:
        await conn.close()


async def _unlock(conn: AsyncConnection) -> None:
    try:
        await conn.scalar(select(func.pg_advisory_unlock(MAINTENANCE_LOCK_KEY)))
        await conn.commit()
    except (SQLAlchemyError, OSError, TimeoutError):
        # A connection that may still hold the lock must never go back to the pool: closing it
        # releases the lock on the server.
        await conn.invalidate()
