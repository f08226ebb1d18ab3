"""Alembic, driven from code: bring a database to this release's schema, or say where it stands.

One process migrates at a time: on PostgreSQL every upgrade holds a session advisory lock, so
replicas starting together queue, the first upgrades and the others find nothing left to do. On
SQLite (one host) the upgrade runs inside `BEGIN IMMEDIATE`, SQLite's own write lock.

A database made before migrations (by `create_all`, so without an `alembic_version` table) is
adopted before upgrading:
  - it holds no Warrant table → a fresh database; every revision runs;
  - `integrations.profile` exists → the interim `create_schema` already added revision 0002's
    column: stamped at 0002;
  - otherwise → nothing is stamped; revision 0001 creates only the tables that are missing and
    leaves the others (and their rows) alone, then 0002 adds the column.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Connection, inspect, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from issuer.db import safe_url
from issuer.errors import ConfigError, IssuerError, Unavailable

__all__ = ["SchemaStatus", "UpgradeResult", "prepare", "status", "upgrade"]

log = logging.getLogger(__name__)

SCRIPT_LOCATION = Path(__file__).parent

# What adoption of a pre-migration database looks at: revision 0001's tables, and the column the
# interim code added in place (revision 0002).
BASELINE_TABLES = frozenset(
    {"tenants", "api_keys", "integrations", "sandboxes", "integration_tests"}
)
PROFILE_REVISION = "0002"

# Every Warrant process, every release, takes this PostgreSQL advisory lock to migrate. Any fixed
# 64-bit number works as long as it never changes; this one is "Warrant" in ASCII.
ADVISORY_LOCK_KEY = 0x57_61_72_72_61_6E_74
# How long a process waits for the lock (another replica migrating) and, while migrating, for the
# table locks DDL needs; migrations take well under a second, so this only trips on a stuck peer.
LOCK_TIMEOUT = timedelta(seconds=60)
_LOCK_NOT_AVAILABLE = "55P03"  # PostgreSQL's SQLSTATE for lock_timeout


@dataclass(frozen=True, slots=True)
class SchemaStatus:
    """Where a database stands against this release's migrations."""

    current: str | None  # the revision it is stamped at; None when unversioned
    head: str  # the newest revision this release knows
    known: bool  # False when `current` came from a newer release
    adopt_at: str | None  # unversioned with Warrant tables: what adoption starts from ("" = base)

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head

    @property
    def ahead(self) -> bool:
        return self.current is not None and not self.known

    def describe(self) -> str:
        """One line for `warrant db current` and startup messages."""
        if self.current is None and self.adopt_at is None:
            return f"empty (no Warrant tables); this release's head is {self.head}"
        if self.current is None:
            start = f"stamps it at {self.adopt_at}" if self.adopt_at else "starts from 0001"
            return (
                f"unversioned (made before migrations); 'warrant db upgrade' adopts it "
                f"({start}) and upgrades it to {self.head}"
            )
        if self.ahead:
            return (
                f"at {self.current}, a revision this release does not know (a newer release "
                f"upgraded it); this release's head is {self.head}"
            )
        if self.up_to_date:
            return f"at {self.current} (head)"
        return f"at {self.current}; this release's head is {self.head}"


@dataclass(frozen=True, slots=True)
class UpgradeResult:
    before: SchemaStatus
    after: str
    applied: tuple[str, ...] = ()  # the revisions run, oldest first

    def describe(self) -> str:
        if self.before.ahead:
            return self.before.describe()
        if self.before.up_to_date:
            return f"already at {self.after} (head); nothing to do"
        ran = f" (ran {', '.join(self.applied)})"
        if self.before.current is None and self.before.adopt_at:
            start = f"adopted the unversioned database at {self.before.adopt_at}"
            return f"{start} and upgraded it to {self.after} (head){ran}"
        if self.before.current is None and self.before.adopt_at is not None:
            start = "adopted the unversioned database"
            return f"{start} and upgraded it to {self.after} (head){ran}"
        return f"upgraded from {self.before.current or 'nothing'} to {self.after} (head){ran}"


async def status(engine: AsyncEngine) -> SchemaStatus:
    """Read where the database stands; changes nothing."""
    config = alembic_config()
    async with _connect(engine) as conn:
        return await conn.run_sync(_status, config)


async def upgrade(engine: AsyncEngine, *, lock_wait: timedelta = LOCK_TIMEOUT) -> UpgradeResult:
    """Adopt a pre-migration database if need be and upgrade it to head, holding the migration
    lock. A database a newer release upgraded is left alone (the result says so). Never drops
    anything. Raises Unavailable when the database cannot be reached, or when the lock (or a
    table lock the DDL needs) is not had within `lock_wait` (PostgreSQL)."""
    config = alembic_config()
    async with _connect(engine) as conn:
        with _migration_errors(engine, lock_wait):
            async with _migration_lock(conn, lock_wait):
                return await conn.run_sync(_upgrade, config)


async def prepare(engine: AsyncEngine, *, auto_migrate: bool) -> None:
    """What startup does (WARRANT_DATABASE_AUTO_MIGRATE): upgrade, or, when automatic migration
    is off, raise ConfigError unless the schema is already current. A schema from a newer release
    is accepted with a warning: revisions only add, so this release's tables are all there."""
    if auto_migrate:
        result = await upgrade(engine)
        if result.before.ahead:
            log.warning("database schema %s; continuing", result.before.describe())
        elif not result.before.up_to_date:
            log.info("database schema %s", result.describe())
        return
    current = await status(engine)
    if current.ahead:
        log.warning("database schema %s; continuing", current.describe())
        return
    if not current.up_to_date:
        raise ConfigError(
            f"the database schema is not current: {current.describe()}. "
            "WARRANT_DATABASE_AUTO_MIGRATE is off: run 'warrant db upgrade', then start again"
        )


def alembic_config() -> Config:
    """Alembic's configuration, built in code (there is no alembic.ini)."""
    config = Config()
    # Config values go through configparser interpolation: a '%' in the path must be doubled.
    config.set_main_option("script_location", str(SCRIPT_LOCATION).replace("%", "%%"))
    # New revision files: rNNNN_<slug>.py (a module name may not start with a digit).
    config.set_main_option("file_template", "r%%(rev)s_%%(slug)s")
    return config


def _status(conn: Connection, config: Config) -> SchemaStatus:
    script = ScriptDirectory.from_config(config)
    head = script.get_current_head()
    if head is None:
        raise RuntimeError(f"no migrations found in {SCRIPT_LOCATION}")
    heads = MigrationContext.configure(conn).get_current_heads()
    if len(heads) > 1:
        raise ConfigError(f"the database is stamped at several revisions {heads}; repair it")
    current = heads[0] if heads else None
    known = current is None or _knows(script, current)
    return SchemaStatus(current, head, known, _adoption(conn) if current is None else None)


def _knows(script: ScriptDirectory, revision: str) -> bool:
    try:
        return script.get_revision(revision) is not None
    except CommandError:
        return False


def _adoption(conn: Connection) -> str | None:
    """For an unversioned database: None if it holds no Warrant table, else the revision to stamp
    before upgrading ("" for none: revision 0001 then creates only what is missing)."""
    inspector = inspect(conn)
    present = BASELINE_TABLES & set(inspector.get_table_names())
    if not present:
        return None
    if "integrations" in present and "profile" in {
        column["name"] for column in inspector.get_columns("integrations")
    }:
        missing = BASELINE_TABLES - present
        if missing:
            # The release that added `profile` created every baseline table with it.
            raise ConfigError(
                f"the database has integrations.profile but lacks {', '.join(sorted(missing))}: "
                "it was not made by a Warrant release; refusing to adopt it"
            )
        return PROFILE_REVISION
    return ""


def _upgrade(conn: Connection, config: Config) -> UpgradeResult:
    before = _status(conn, config)
    if before.ahead:
        return UpgradeResult(before, before.current or "")
    config.attributes["connection"] = conn
    if before.adopt_at:
        command.stamp(config, before.adopt_at)
    start = before.current or before.adopt_at or "base"
    script = ScriptDirectory.from_config(config)
    pending = [r.revision for r in script.iterate_revisions(before.head, start)]
    command.upgrade(config, "head")
    return UpgradeResult(before, before.head, tuple(reversed(pending)))


@asynccontextmanager
async def _connect(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection; failing to get one is one line that names the setting, never the password."""
    try:
        conn = await engine.connect()
    except (DBAPIError, OSError, TimeoutError, PoolTimeoutError) as exc:
        raise Unavailable(
            f"cannot connect to the database at WARRANT_DATABASE_URL ({safe_url(engine)}): "
            f"{_reason(engine, exc)}"
        ) from exc
    try:
        yield conn
    finally:
        await conn.close()


@contextmanager
def _migration_errors(engine: AsyncEngine, lock_wait: timedelta) -> Iterator[None]:
    """A failed upgrade, said plainly: it was rolled back whole (one transaction), so the
    database is as it was before."""
    try:
        yield
    except DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) == _LOCK_NOT_AVAILABLE:
            raise Unavailable(
                f"gave up after {lock_wait.total_seconds():g} s waiting for a database "
                "lock: another Warrant process is migrating, or a transaction holds a table"
            ) from exc
        if exc.connection_invalidated:
            raise Unavailable(
                f"lost the database at WARRANT_DATABASE_URL ({safe_url(engine)}) while "
                f"upgrading the schema; nothing was changed: {_reason(engine, exc)}"
            ) from exc
        raise IssuerError(
            f"the schema upgrade failed and was rolled back: {_reason(engine, exc)}"
        ) from exc
    except (OSError, TimeoutError) as exc:
        raise Unavailable(
            f"lost the database at WARRANT_DATABASE_URL ({safe_url(engine)}) while upgrading "
            f"the schema; nothing was changed: {_reason(engine, exc)}"
        ) from exc


def _reason(engine: AsyncEngine, exc: BaseException) -> str:
    """The driver's own words (not SQLAlchemy's wrapper), any password in them masked."""
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    reason = str(cause).strip()
    password = engine.url.password
    if password:
        reason = reason.replace(str(password), "***")
    return f"{type(cause).__name__}: {reason}" if reason else type(cause).__name__


@asynccontextmanager
async def _migration_lock(conn: AsyncConnection, lock_wait: timedelta) -> AsyncIterator[None]:
    """Hold the migration lock and one transaction around the body; commit when it succeeds."""
    postgres = conn.dialect.name == "postgresql"
    async with _postgres_lock(conn, lock_wait) if postgres else _sqlite_lock(conn):
        yield


@asynccontextmanager
async def _postgres_lock(conn: AsyncConnection, lock_wait: timedelta) -> AsyncIterator[None]:
    # A session lock outlives the transaction it was taken in; DDL is transactional, so a failed
    # upgrade rolls back whole. On failure the connection is discarded, which also drops the lock.
    timeout_ms = int(lock_wait.total_seconds() * 1000)
    await conn.execute(text(f"SET lock_timeout = {timeout_ms}"))
    await conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": ADVISORY_LOCK_KEY})
    await conn.commit()
    try:
        yield
        await conn.commit()
    except BaseException:
        await conn.invalidate()
        raise
    await conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": ADVISORY_LOCK_KEY})
    await conn.execute(text("RESET lock_timeout"))
    await conn.commit()


@asynccontextmanager
async def _sqlite_lock(conn: AsyncConnection) -> AsyncIterator[None]:
    # SQLite's recipe for schema changes: foreign keys off (a batch migration drops and recreates
    # a table; with them on, dropping a parent would cascade-delete its children's rows), one
    # immediate transaction, a foreign-key check before commit. The pragma is ignored inside a
    # transaction, so it comes first; Python's sqlite3 leaves DDL alone, so BEGIN is explicit.
    await conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
    try:
        await conn.exec_driver_sql("BEGIN IMMEDIATE")
        try:
            yield
            await _check_foreign_keys(conn)
            await conn.commit()
        except BaseException:
            await conn.rollback()
            raise
    finally:
        await conn.exec_driver_sql("PRAGMA foreign_keys=ON")
        await conn.commit()


async def _check_foreign_keys(conn: AsyncConnection) -> None:
    broken = (await conn.exec_driver_sql("PRAGMA foreign_key_check")).all()
    if broken:
        raise IssuerError(f"the migration broke {len(broken)} foreign key(s); rolled back")
