"""The one SQL store: an async SQLAlchemy engine on SQLite (embedded) or PostgreSQL (shared).

Every table of the issuer and the broker is declared on `Base.metadata`, so one database and one
engine serve the whole process. The schema is built and upgraded by the Alembic migrations in
`issuer.migrations`, never by `create_all`.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import DateTime, Dialect, MetaData, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    InterfaceError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.ext.asyncio import create_async_engine as _create_async_engine
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.types import TypeDecorator
from sqlalchemy.util import await_

from issuer.errors import ConfigError, Unavailable

__all__ = [
    "MODEL_MODULES",
    "Base",
    "PoolSettings",
    "UtcDateTime",
    "create_engine",
    "database_errors",
    "load_models",
    "ping",
    "safe_url",
    "session_factory",
]

SQLITE_SCHEME = "sqlite+aiosqlite"
POSTGRES_SCHEME = "postgresql+asyncpg"
ACCEPTED_FORMS = (
    f"{SQLITE_SCHEME}:///path/to/warrant.db or {POSTGRES_SCHEME}://user:password@host:5432/dbname"
)

# Timeouts, in one place.
# A writer waits this long for another writer's lock before SQLite reports "database is locked";
# issuer writes are single statements that finish in milliseconds, so 5 s only trips on a stuck
# process.
SQLITE_BUSY_TIMEOUT = timedelta(seconds=5)
# Switching a new SQLite file to WAL takes an exclusive lock without calling the busy handler, so
# processes opening a fresh file at once can get "database is locked": retry this often, for as
# long as the busy timeout would have waited.
SQLITE_WAL_RETRY = timedelta(milliseconds=10)
# Opening a PostgreSQL connection: asyncpg's default is 60 s, far longer than a /readyz probe or a
# minting request should hang when the server is gone.
POSTGRES_CONNECT_TIMEOUT = timedelta(seconds=5)
# Waiting for a free pooled connection: past this the process is overloaded; fail with 503.
POOL_CHECKOUT_TIMEOUT = timedelta(seconds=10)
# Recycle connections before common idle cut-offs (PgBouncer, cloud load balancers) drop them.
POOL_RECYCLE = timedelta(minutes=30)
# /readyz gives the database this long to answer SELECT 1. An orchestrator's probe gives up after
# a few seconds; waiting out the connect timeout (or a checkout from a saturated pool) would turn
# a clear `"database": false` into a probe timeout.
PING_TIMEOUT = timedelta(seconds=2)

# Every module that declares a table on `Base.metadata`. Autogenerate and the test that the
# migrations match the models import them through `load_models()`. Names rather than imports, so
# the issuer does not import the broker. A module with a new table goes here.
MODEL_MODULES = (
    "issuer.tenants",
    "issuer.apikeys",
    "broker.integrations",
    "broker.sandboxes",
    "broker.connection_store",
    "issuer.key_store_sql",
)


class Base(DeclarativeBase):
    """Declarative base for every Warrant table (its module is listed in MODEL_MODULES)."""


def load_models() -> MetaData:
    """Import every module in MODEL_MODULES and return `Base.metadata`, now complete.

    The running service does not need this (the migrations build the schema); autogenerate and the
    migrations-match-the-models test do.
    """
    for name in MODEL_MODULES:
        importlib.import_module(name)
    return Base.metadata


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp stored as UTC and always read back timezone-aware (UTC).

    PostgreSQL keeps `timestamptz`; SQLite has no time zones and stores the UTC wall time, which is
    tagged UTC again on the way out. Naive datetimes are refused rather than guessed at.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("naive datetime; Warrant stores timezone-aware timestamps only")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class PoolSettings:
    """One process's connection pool (WARRANT_DATABASE_POOL_*, validated in `issuer.settings`).

    `size` connections stay open; up to `max_overflow` more open under a burst and close when
    returned; a request waits at most `timeout` for a connection, then fails with 503; connections
    older than `recycle` are replaced. PostgreSQL connections are always checked before use.
    """

    size: int = 5
    max_overflow: int = 5
    timeout: timedelta = POOL_CHECKOUT_TIMEOUT
    recycle: timedelta = POOL_RECYCLE


def create_engine(url: str, pool: PoolSettings | None = None) -> AsyncEngine:
    """Build the engine for `WARRANT_DATABASE_URL`; raise ConfigError for any other scheme."""
    parsed = _parse(url)
    pool = pool or PoolSettings()
    if parsed.drivername == SQLITE_SCHEME:
        return _sqlite_engine(parsed, pool)
    if parsed.drivername == POSTGRES_SCHEME:
        return _postgres_engine(parsed, pool)
    raise ConfigError(
        f"WARRANT_DATABASE_URL: unsupported scheme {parsed.drivername!r}; use {ACCEPTED_FORMS}"
    )


def safe_url(engine: AsyncEngine) -> str:
    """The engine's URL as messages and logs may show it: any password masked."""
    return engine.url.render_as_string(hide_password=True)


async def ping(engine: AsyncEngine) -> bool:
    """Whether the database answers `SELECT 1` within PING_TIMEOUT (for /readyz); False on any
    database error or when it takes longer."""
    try:
        async with asyncio.timeout(PING_TIMEOUT.total_seconds()), engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except (SQLAlchemyError, OSError, TimeoutError):
        return False
    return True


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions as every store uses them: rows stay readable after commit."""
    return async_sessionmaker(engine, expire_on_commit=False)


@contextlib.contextmanager
def database_errors() -> Iterator[None]:
    """Turn "the database cannot be reached" into Unavailable (503); let every other error through.

    Connection failures surface as OSError or TimeoutError straight from the driver, or as
    OperationalError/InterfaceError/pool timeouts from SQLAlchemy. Constraint violations and
    programming errors are not outages and pass unchanged.
    """
    try:
        yield
    except (OperationalError, InterfaceError, PoolTimeoutError, OSError, TimeoutError) as exc:
        raise Unavailable("the database is unavailable; retry later") from exc
    except DBAPIError as exc:
        if exc.connection_invalidated:
            raise Unavailable("the database is unavailable; retry later") from exc
        raise


def _parse(url: str) -> URL:
    try:
        return make_url(url)
    except (ArgumentError, ValueError) as exc:
        # The URL may hold a password: never echo it.
        raise ConfigError(
            f"WARRANT_DATABASE_URL is not a database URL; use {ACCEPTED_FORMS}"
        ) from exc


def _sqlite_engine(url: URL, pool: PoolSettings) -> AsyncEngine:
    database = url.database or ""
    if database in {"", ":memory:"}:
        # In-memory (tests, throwaway demos): SQLAlchemy keeps one shared connection, no pool size.
        engine = _create_async_engine(url)
    else:
        if not database.startswith("file:"):
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        # A local file: no server drops idle connections, so neither recycling nor pre-ping.
        engine = _create_async_engine(
            url,
            pool_size=pool.size,
            max_overflow=pool.max_overflow,
            pool_timeout=pool.timeout.total_seconds(),
        )
    event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    # busy_timeout makes a second writer wait instead of failing at once (first: switching to
    # WAL needs a lock too); WAL lets readers run while one writer writes; SQLite leaves foreign
    # keys off unless asked.
    cursor = dbapi_connection.cursor()
    try:
        busy_ms = int(SQLITE_BUSY_TIMEOUT.total_seconds() * 1000)
        cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
        _enable_wal(cursor)
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def _enable_wal(cursor: Any) -> None:
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT.total_seconds()
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            # The connect hook runs in SQLAlchemy's greenlet: wait without blocking the loop.
            await_(asyncio.sleep(SQLITE_WAL_RETRY.total_seconds()))
        else:
            return


def _postgres_engine(url: URL, pool: PoolSettings) -> AsyncEngine:
    return _create_async_engine(
        url,
        pool_size=pool.size,
        max_overflow=pool.max_overflow,
        pool_timeout=pool.timeout.total_seconds(),
        pool_recycle=int(pool.recycle.total_seconds()),
        # A connection the server closed (restart, failover) is replaced instead of failing a
        # request.
        pool_pre_ping=True,
        connect_args={"timeout": POSTGRES_CONNECT_TIMEOUT.total_seconds()},
    )
