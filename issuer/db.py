"""The one SQL store: an async SQLAlchemy engine on SQLite (embedded) or PostgreSQL (shared).

The issuer's tables live here now; the broker's (integrations, sandboxes) will join the same
`Base.metadata`, so one database and one engine serve the whole process.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import DateTime, Dialect, event, inspect, text
from sqlalchemy.engine import URL, Connection, make_url
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
from sqlalchemy.schema import CreateColumn
from sqlalchemy.types import TypeDecorator

from issuer.errors import ConfigError, Unavailable

__all__ = [
    "Base",
    "UtcDateTime",
    "create_engine",
    "create_schema",
    "database_errors",
    "ping",
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
# Opening a PostgreSQL connection: asyncpg's default is 60 s, far longer than a /readyz probe or a
# minting request should hang when the server is gone.
POSTGRES_CONNECT_TIMEOUT = timedelta(seconds=5)
# Waiting for a free pooled connection: past this the process is overloaded; fail with 503.
POOL_CHECKOUT_TIMEOUT = timedelta(seconds=10)
# Recycle connections before common idle cut-offs (PgBouncer, cloud load balancers) drop them.
POOL_RECYCLE = timedelta(minutes=30)


class Base(DeclarativeBase):
    """Declarative base for every Warrant table (issuer now, broker later)."""


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


def create_engine(url: str, *, pool_size: int = 5) -> AsyncEngine:
    """Build the engine for `WARRANT_DATABASE_URL`; raise ConfigError for any other scheme."""
    parsed = _parse(url)
    if parsed.drivername == SQLITE_SCHEME:
        return _sqlite_engine(parsed, pool_size)
    if parsed.drivername == POSTGRES_SCHEME:
        return _postgres_engine(parsed, pool_size)
    raise ConfigError(
        f"WARRANT_DATABASE_URL: unsupported scheme {parsed.drivername!r}; use {ACCEPTED_FORMS}"
    )


async def create_schema(engine: AsyncEngine) -> None:
    """Create every missing table registered in `Base.metadata`. Idempotent.

    A table is registered when its module is imported (issuer.tenants, issuer.apikeys, and the
    broker's modules later); the wiring code imports them before calling this.

    Alembic migrations replace this in a later issue; until then `create_all` only adds missing
    tables and never alters an existing one.
    """
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
        await conn.run_sync(_add_missing_columns)


def _add_missing_columns(conn: Connection) -> None:
    """Columns added to an existing table after it was created, if they have a server default
    (so existing rows get it): ADD COLUMN never rewrites or drops data. Interim until Alembic."""
    inspector = inspect(conn)
    for table in Base.metadata.sorted_tables:
        if not inspector.has_table(table.name):
            continue
        present = {column["name"] for column in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in present or column.server_default is None:
                continue
            ddl = CreateColumn(column).compile(dialect=conn.dialect)
            conn.execute(text(f'ALTER TABLE "{table.name}" ADD COLUMN {ddl}'))


async def ping(engine: AsyncEngine) -> bool:
    """Whether the database answers `SELECT 1` (for /readyz); False on any database error."""
    try:
        async with engine.connect() as conn:
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


def _sqlite_engine(url: URL, pool_size: int) -> AsyncEngine:
    database = url.database or ""
    if database in {"", ":memory:"}:
        # In-memory (tests, throwaway demos): SQLAlchemy keeps one shared connection, no pool size.
        engine = _create_async_engine(url)
    else:
        if not database.startswith("file:"):
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = _create_async_engine(url, pool_size=pool_size)
    event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    # WAL lets readers run while one writer writes; SQLite leaves foreign keys off unless asked;
    # busy_timeout makes a second writer wait instead of failing at once.
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        busy_ms = int(SQLITE_BUSY_TIMEOUT.total_seconds() * 1000)
        cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
    finally:
        cursor.close()


def _postgres_engine(url: URL, pool_size: int) -> AsyncEngine:
    return _create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_timeout=POOL_CHECKOUT_TIMEOUT.total_seconds(),
        pool_recycle=int(POOL_RECYCLE.total_seconds()),
        # A connection the server closed (restart, failover) is replaced instead of failing a
        # request.
        pool_pre_ping=True,
        connect_args={"timeout": POSTGRES_CONNECT_TIMEOUT.total_seconds()},
    )
