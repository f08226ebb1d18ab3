"""The shared SQL store: URL checks, SQLite pragmas, pool settings, schema upgrade, UTC
timestamps, readiness."""

from __future__ import annotations

import sqlite3
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import Dialect, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import AsyncAdaptedQueuePool
from sqlalchemy.util import greenlet_spawn

from issuer.db import (
    PoolSettings,
    UtcDateTime,
    _enable_wal,
    create_engine,
    database_errors,
    ping,
)
from issuer.errors import ConfigError, Unavailable
from issuer.migrations import upgrade
from issuer.settings import Settings

UNREACHABLE_POSTGRES = "postgresql+asyncpg://postgres@127.0.0.1:1/warrant"


@pytest.mark.parametrize(
    "url",
    [
        "mysql+aiomysql://warrant:s3cret@db/warrant",
        "sqlite:///var/warrant.db",
        "postgresql://warrant:s3cret@db/warrant",
        "postgresql+psycopg://warrant:s3cret@db/warrant",
        "not a url",
        "",
        "postgresql+asyncpg://warrant:s3cret@db:notaport/warrant",
    ],
)
def test_unsupported_url_is_a_config_error(url: str) -> None:
    """Any scheme but sqlite+aiosqlite or postgresql+asyncpg is refused naming the variable, the
    accepted forms, and never the password."""
    with pytest.raises(ConfigError) as caught:
        create_engine(url)
    message = caught.value.message
    assert "WARRANT_DATABASE_URL" in message
    assert "sqlite+aiosqlite:///" in message
    assert "postgresql+asyncpg://" in message
    assert "s3cret" not in message


async def test_sqlite_creates_parent_directory_and_sets_pragmas(tmp_path: Path) -> None:
    """A SQLite URL gets its directory created and every connection runs WAL, foreign keys on and
    a 5 s busy timeout."""
    path = tmp_path / "nested" / "dir" / "warrant.db"
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    try:
        assert path.parent.is_dir()
        async with engine.connect() as conn:
            assert (await conn.execute(text("PRAGMA journal_mode"))).scalar() == "wal"
            assert (await conn.execute(text("PRAGMA foreign_keys"))).scalar() == 1
            assert (await conn.execute(text("PRAGMA busy_timeout"))).scalar() == 5000
    finally:
        await engine.dispose()


POOL = PoolSettings(
    size=3, max_overflow=2, timeout=timedelta(seconds=7), recycle=timedelta(minutes=4)
)


async def test_postgres_engine_uses_the_pool_settings_and_pre_ping() -> None:
    """A PostgreSQL engine is pooled with the requested size, overflow, checkout timeout and
    recycle age, and checks connections before use."""
    engine = create_engine(UNREACHABLE_POSTGRES, POOL)
    try:
        pool = engine.pool
        assert isinstance(pool, AsyncAdaptedQueuePool)
        assert pool.size() == 3
        assert pool._max_overflow == 2
        assert pool._timeout == 7
        assert pool._recycle == 240
        assert pool._pre_ping
    finally:
        await engine.dispose()


async def test_sqlite_file_engine_uses_the_pool_size_and_timeout(tmp_path: Path) -> None:
    """A SQLite file engine is pooled with the requested size, overflow and checkout timeout."""
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'warrant.db'}", POOL)
    try:
        pool = engine.pool
        assert isinstance(pool, AsyncAdaptedQueuePool)
        assert (pool.size(), pool._max_overflow, pool._timeout) == (3, 2, 7)
    finally:
        await engine.dispose()


async def test_upgrade_is_idempotent(engine: AsyncEngine) -> None:
    """Upgrading a database that is already current changes nothing and does not fail."""
    await upgrade(engine)
    async with engine.connect() as conn:
        count = (await conn.execute(text("SELECT count(*) FROM tenants"))).scalar()
    assert count == 0


async def test_ping_is_true_on_a_live_database(engine: AsyncEngine) -> None:
    """Ping answers True when the database runs SELECT 1."""
    assert await ping(engine) is True


async def test_ping_is_false_quickly_on_an_unreachable_server() -> None:
    """Ping answers False, within the connect timeout, when PostgreSQL cannot be reached."""
    engine = create_engine(UNREACHABLE_POSTGRES)
    try:
        started = time.monotonic()
        assert await ping(engine) is False
        assert time.monotonic() - started < 6
    finally:
        await engine.dispose()


async def test_unreachable_database_is_unavailable() -> None:
    """A statement on an unreachable database surfaces as Unavailable (503)."""
    engine = create_engine(UNREACHABLE_POSTGRES)
    try:
        with pytest.raises(Unavailable), database_errors():
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
    finally:
        await engine.dispose()


async def test_constraint_violations_are_not_outages(engine: AsyncEngine) -> None:
    """A constraint violation passes through database_errors unchanged, not as Unavailable."""
    await _insert_tenant(engine, "acme")
    with pytest.raises(IntegrityError), database_errors():
        await _insert_tenant(engine, "acme")


async def _insert_tenant(engine: AsyncEngine, slug: str) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            text("INSERT INTO tenants (slug, name, created_at) VALUES (:slug, :slug, :at)"),
            {"slug": slug, "at": datetime.now(UTC)},
        )


def test_database_errors_passes_other_errors_through() -> None:
    """Errors that are not about the database leave database_errors unchanged."""
    with pytest.raises(KeyError), database_errors():
        raise KeyError("not an outage")


@pytest.mark.parametrize("url", ["sqlite+aiosqlite://", "sqlite+aiosqlite:///:memory:"])
async def test_in_memory_sqlite_works(url: str) -> None:
    """An in-memory SQLite URL needs no directory and serves the schema on one shared connection."""
    engine = create_engine(url)
    try:
        await upgrade(engine)
        assert await ping(engine) is True
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT count(*) FROM tenants"))).scalar() == 0
    finally:
        await engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def dialect(request: pytest.FixtureRequest, tmp_path: Path) -> Dialect:
    """The SQLite and the PostgreSQL dialect, as the engines use them (no connection made)."""
    if request.param == "sqlite":
        return create_engine(f"sqlite+aiosqlite:///{tmp_path / 'unused.db'}").dialect
    return create_engine(UNREACHABLE_POSTGRES).dialect


def test_utc_datetime_binds_utc_and_refuses_naive(dialect: Dialect) -> None:
    """Aware timestamps are stored converted to UTC; naive ones are refused."""
    column = UtcDateTime()
    plus_two = datetime(2026, 1, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    bound = column.process_bind_param(plus_two, dialect)
    assert bound == plus_two
    assert bound is not None
    assert bound.tzinfo is UTC
    with pytest.raises(ValueError, match="naive"):
        column.process_bind_param(datetime(2026, 1, 1), dialect)  # noqa: DTZ001
    assert column.process_bind_param(None, dialect) is None


def test_utc_datetime_reads_back_aware_utc(dialect: Dialect) -> None:
    """Stored timestamps come back timezone-aware UTC, whether the driver returned naive or not."""
    column = UtcDateTime()
    naive = datetime(2026, 1, 1, 12, 0)  # noqa: DTZ001 - what SQLite hands back
    assert column.process_result_value(naive, dialect) == datetime(2026, 1, 1, 12, tzinfo=UTC)
    plus_two = datetime(2026, 1, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    read = column.process_result_value(plus_two, dialect)
    assert read is not None
    assert read.tzinfo is UTC
    assert column.process_result_value(None, dialect) is None


def test_pool_and_migration_settings_default_and_parse(tmp_path: Path) -> None:
    """Unset, the pool is 5 + 5 connections, 10 s checkout, 30 min recycle, and startup migrates;
    each WARRANT_DATABASE_* variable sets its own value."""
    base = {"WARRANT_DATA_DIR": str(tmp_path)}
    defaults = Settings.from_env(base, require_issuer=False)
    assert defaults.database_pool == PoolSettings(
        size=5, max_overflow=5, timeout=timedelta(seconds=10), recycle=timedelta(minutes=30)
    )
    assert defaults.database_auto_migrate is True
    custom = Settings.from_env(
        {
            **base,
            "WARRANT_DATABASE_POOL_SIZE": "20",
            "WARRANT_DATABASE_POOL_MAX_OVERFLOW": "0",
            "WARRANT_DATABASE_POOL_TIMEOUT": "30s",
            "WARRANT_DATABASE_POOL_RECYCLE": "1h",
            "WARRANT_DATABASE_AUTO_MIGRATE": "0",
        },
        require_issuer=False,
    )
    assert custom.database_pool == PoolSettings(
        size=20, max_overflow=0, timeout=timedelta(seconds=30), recycle=timedelta(hours=1)
    )
    assert custom.database_auto_migrate is False


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("WARRANT_DATABASE_POOL_SIZE", "0"),
        ("WARRANT_DATABASE_POOL_SIZE", "101"),
        ("WARRANT_DATABASE_POOL_SIZE", "-3"),
        ("WARRANT_DATABASE_POOL_SIZE", "five"),
        ("WARRANT_DATABASE_POOL_SIZE", "2.5"),
        ("WARRANT_DATABASE_POOL_MAX_OVERFLOW", "101"),
        ("WARRANT_DATABASE_POOL_MAX_OVERFLOW", "-1"),
        ("WARRANT_DATABASE_POOL_TIMEOUT", "0"),
        ("WARRANT_DATABASE_POOL_TIMEOUT", "10m"),
        ("WARRANT_DATABASE_POOL_TIMEOUT", "soon"),
        ("WARRANT_DATABASE_POOL_RECYCLE", "30"),
        ("WARRANT_DATABASE_AUTO_MIGRATE", "maybe"),
    ],
)
def test_bad_pool_and_migration_settings_name_the_variable(
    tmp_path: Path, name: str, value: str
) -> None:
    """An out-of-range or malformed pool or migration setting stops startup with an error that
    names the variable."""
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({"WARRANT_DATA_DIR": str(tmp_path), name: value}, require_issuer=False)


class WalRefusedCursor:
    """A DB-API cursor on which SQLite refuses the switch to WAL `refusals` times with `error`,
    as it does while another connection is switching a fresh file (without a busy wait)."""

    def __init__(self, refusals: int, error: str = "database is locked") -> None:
        self.refusals = refusals
        self.error = error
        self.statements: list[str] = []

    def execute(self, statement: str) -> None:
        self.statements.append(statement)
        if self.refusals:
            self.refusals -= 1
            raise sqlite3.OperationalError(self.error)


async def test_switching_to_wal_is_retried_while_the_file_is_locked() -> None:
    """A connection whose switch to WAL meets "database is locked" retries until it succeeds,
    so processes opening a fresh SQLite file at once all connect."""
    cursor = WalRefusedCursor(refusals=3)
    await greenlet_spawn(_enable_wal, cursor)
    assert cursor.statements == ["PRAGMA journal_mode=WAL"] * 4


async def test_other_errors_switching_to_wal_are_not_retried() -> None:
    """Any other SQLite error while switching to WAL fails the connection at once."""
    cursor = WalRefusedCursor(refusals=1, error="disk I/O error")
    with pytest.raises(sqlite3.OperationalError, match="disk I/O error"):
        await greenlet_spawn(_enable_wal, cursor)
    assert len(cursor.statements) == 1
