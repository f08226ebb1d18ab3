"""The Alembic migrations: they build exactly the models' schema, one process migrates at a time,
a failed upgrade leaves nothing behind, and startup and the CLI report where a database stands."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.operations import ops
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Column, Connection, String, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from issuer.db import MODEL_MODULES, create_engine, load_models
from issuer.errors import ConfigError, IssuerError, Unavailable
from issuer.migrations import prepare, status, upgrade
from issuer.migrations.autogen import refuse_drops
from issuer.migrations.runner import ADVISORY_LOCK_KEY, BASELINE_TABLES, SCRIPT_LOCATION
from tests.e2e import base_env, cli

REPO = Path(__file__).resolve().parents[2]
SCRIPT = ScriptDirectory(str(SCRIPT_LOCATION))
HEAD = SCRIPT.get_current_head()
# Every revision, oldest first: what an upgrade from nothing runs.
REVISIONS = tuple(r.revision for r in reversed(list(SCRIPT.walk_revisions())))
ALL = ", ".join(REVISIONS)


@pytest.fixture
async def fresh(database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on an empty database (SQLite and PostgreSQL), not migrated."""
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


def differences(conn: Connection) -> list[Any]:
    """What autogenerate would write to make the database match the models (nothing = current)."""
    context = MigrationContext.configure(
        conn, opts={"compare_type": True, "compare_server_default": True}
    )
    return list(compare_metadata(context, load_models()))


async def tables(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))


async def test_the_migrations_build_exactly_the_models(fresh: AsyncEngine) -> None:
    """Upgraded from nothing, the database matches every model: autogenerate finds no
    difference (tables, columns, types, nullability, defaults, indexes, constraints)."""
    await upgrade(fresh)
    async with fresh.connect() as conn:
        assert await conn.run_sync(differences) == []


async def test_the_comparison_sees_a_change_no_revision_made(fresh: AsyncEngine) -> None:
    """A column the models have and the database lacks shows up as a difference: the check
    above can fail."""
    await upgrade(fresh)
    async with fresh.begin() as conn:
        await conn.execute(text("ALTER TABLE integrations DROP COLUMN profile"))
    async with fresh.connect() as conn:
        found = await conn.run_sync(differences)
    added = [(d[2], d[3].name) for d in found if d[0] == "add_column"]
    assert added == [("integrations", "profile")]


# A table declared on Base: an ORM class, or a Core Table(..., Base.metadata, ...).
DECLARES_TABLE = re.compile(r"^class \w+\(Base\):|\bBase\.metadata\b", re.MULTILINE)


def test_every_module_with_a_table_is_loaded_for_the_comparison() -> None:
    """MODEL_MODULES names exactly the modules that declare a table on Base, so a new table
    cannot escape the check that the migrations match the models."""
    declaring = set()
    for package in ("keys", "issuer", "broker"):
        for path in (REPO / package).rglob("*.py"):
            name = ".".join(path.relative_to(REPO).with_suffix("").parts)
            if name == "issuer.db" or name.startswith("issuer.migrations"):
                continue
            if DECLARES_TABLE.search(path.read_text()):
                declaring.add(name)
    assert declaring == set(MODEL_MODULES)
    assert set(load_models().tables) >= BASELINE_TABLES


def test_the_revisions_form_one_numbered_line() -> None:
    """Revisions are 0001, 0002, ... each on the one before, in files named rNNNN_<slug>.py:
    one head, so two people adding a revision at once collide in review, not in production."""
    script = ScriptDirectory(str(SCRIPT_LOCATION))
    assert len(script.get_heads()) == 1
    revisions = list(reversed(list(script.walk_revisions())))
    assert [r.revision for r in revisions] == [f"{n:04d}" for n in range(1, len(revisions) + 1)]
    for previous, revision in zip([None, *revisions], revisions, strict=False):
        assert revision.down_revision == (previous.revision if previous else None)
        assert revision.path is not None
        assert Path(revision.path).name.startswith(f"r{revision.revision}_")


async def test_status_before_and_after_an_upgrade(fresh: AsyncEngine) -> None:
    """An empty database has no revision and is not current; after an upgrade it is at head, and
    a second upgrade has nothing to do."""
    before = await status(fresh)
    assert (before.current, before.head, before.adopt_at, before.up_to_date) == (
        None,
        HEAD,
        None,
        False,
    )
    first = await upgrade(fresh)
    assert first.describe() == f"upgraded from nothing to {HEAD} (head) (ran {ALL})"
    assert (await status(fresh)).current == HEAD
    assert (await upgrade(fresh)).describe() == f"already at {HEAD} (head); nothing to do"


async def test_replicas_upgrading_at_once_take_turns(database_url: str) -> None:
    """Six processes' worth of engines upgrading one empty database at once: exactly one
    migrates, the others wait for it and find the schema current; nothing fails."""
    engines = [create_engine(database_url) for _ in range(6)]
    try:
        results = await asyncio.gather(*(upgrade(engine) for engine in engines))
    finally:
        for engine in engines:
            await engine.dispose()
    assert sorted(r.before.up_to_date for r in results) == [False] + [True] * 5
    assert {r.after for r in results} == {HEAD}


async def test_a_failed_upgrade_leaves_nothing_behind(fresh: AsyncEngine) -> None:
    """When a revision fails halfway (here: a view squats on a table's name), the tables it had
    already created are rolled back and no revision is recorded; on SQLite foreign keys are
    enforced again afterwards."""
    async with fresh.begin() as conn:
        await conn.execute(text("CREATE VIEW sandboxes AS SELECT 1 AS id"))
    with pytest.raises(IssuerError, match="the schema upgrade failed and was rolled back: "):
        await upgrade(fresh)
    assert await tables(fresh) == set()
    assert (await status(fresh)).current is None
    if fresh.dialect.name == "sqlite":
        async with fresh.connect() as conn:
            assert (await conn.execute(text("PRAGMA foreign_keys"))).scalar() == 1


async def test_sqlite_foreign_keys_are_back_on_after_an_upgrade(tmp_path: Path) -> None:
    """The upgrade turns SQLite's foreign keys off while it runs and on again after: a pooled
    connection used next still enforces them."""
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'warrant.db'}")
    try:
        await upgrade(engine)
        async with engine.connect() as conn:
            assert (await conn.execute(text("PRAGMA foreign_keys"))).scalar() == 1
    finally:
        await engine.dispose()


async def test_without_auto_migrate_startup_refuses_a_schema_behind(fresh: AsyncEngine) -> None:
    """With automatic migration off, an empty or outdated schema stops startup with a message
    naming the setting and the command; a current one starts."""
    with pytest.raises(ConfigError, match="WARRANT_DATABASE_AUTO_MIGRATE is off: run 'warrant db"):
        await prepare(fresh, auto_migrate=False)
    assert await tables(fresh) == set()
    await prepare(fresh, auto_migrate=True)
    await prepare(fresh, auto_migrate=False)
    async with fresh.begin() as conn:
        await conn.execute(text("UPDATE alembic_version SET version_num = '0001'"))
    with pytest.raises(ConfigError, match="at 0001; this release's head is"):
        await prepare(fresh, auto_migrate=False)


async def test_a_schema_from_a_newer_release_is_left_alone(
    fresh: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    """A database a newer release upgraded (an unknown revision) is not touched: startup warns and
    carries on (revisions only add), and an upgrade reports it instead of failing halfway."""
    await upgrade(fresh)
    async with fresh.begin() as conn:
        await conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    with caplog.at_level(logging.WARNING, logger="issuer.migrations.runner"):
        await prepare(fresh, auto_migrate=True)
        await prepare(fresh, auto_migrate=False)
    assert [
        r.getMessage().count("9999, a revision this release does not know") for r in caplog.records
    ] == [1, 1]
    result = await upgrade(fresh)
    assert result.before.ahead
    assert (await status(fresh)).current == "9999"


def test_the_db_commands(tmp_path: Path, database_url: str) -> None:
    """`warrant db current` reports an empty database (and `--check` fails on it), `warrant db
    upgrade` migrates it, then both report it current; with WARRANT_DATABASE_AUTO_MIGRATE=0 the
    other commands refuse an unmigrated database, naming the remedy."""
    env = base_env(tmp_path / "var", WARRANT_DATABASE_URL=database_url)
    manual = {**env, "WARRANT_DATABASE_AUTO_MIGRATE": "0"}
    current = cli(env, "db", "current")
    assert current.stdout.strip() == (
        f"database schema empty (no Warrant tables); this release's head is {HEAD}"
    )
    assert cli(env, "db", "current", "--check", check=False).returncode == 1
    refused = cli(manual, "tenants", "list", check=False)
    assert refused.returncode == 1
    assert "WARRANT_DATABASE_AUTO_MIGRATE is off: run 'warrant db upgrade'" in refused.stderr

    upgraded = cli(env, "db", "upgrade")
    assert upgraded.stdout.strip() == (
        f"database schema upgraded from nothing to {HEAD} (head) (ran {ALL})"
    )
    again = cli(env, "db", "upgrade")
    assert again.stdout.strip() == f"database schema already at {HEAD} (head); nothing to do"
    assert (
        cli(env, "db", "current", "--check").stdout.strip() == f"database schema at {HEAD} (head)"
    )
    assert "no tenants" in cli(manual, "tenants", "list").stdout


def test_autogenerate_refuses_to_draft_a_drop() -> None:
    """A draft that would drop a table or a column (inside a batch too) is refused, naming each
    and the likely cause; adding things passes."""
    adds = ops.UpgradeOps([ops.AddColumnOp("integrations", Column("note", String(20)))])
    refuse_drops(None, None, [ops.MigrationScript("0009", adds, ops.DowngradeOps([]))])
    drops = ops.UpgradeOps(
        [
            ops.DropTableOp("signing_keys"),
            ops.ModifyTableOps("integrations", [ops.DropColumnOp("integrations", "profile")]),
        ]
    )
    with pytest.raises(RuntimeError) as refused:
        refuse_drops(None, None, [ops.MigrationScript("0009", drops, ops.DowngradeOps([]))])
    assert str(refused.value).startswith(
        "autogenerate would drop table signing_keys, column integrations.profile. "
    )
    assert "MODEL_MODULES" in str(refused.value)


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_an_upgrade_waits_for_the_advisory_lock_and_gives_up_clearly(
    fresh: AsyncEngine, database_url: str
) -> None:
    """While another session holds the migration lock, an upgrade waits for it (changing
    nothing) and, past its wait, fails with a message saying why; once the lock is free it runs."""
    url = make_url(database_url)
    holder = await asyncpg.connect(
        host=url.host, port=url.port, user=url.username, database=url.database
    )
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", ADVISORY_LOCK_KEY)
        with pytest.raises(Unavailable, match=r"gave up after 0\.5 s waiting for a database lock"):
            await upgrade(fresh, lock_wait=timedelta(milliseconds=500))
        assert await tables(fresh) == set()
        await holder.execute("SELECT pg_advisory_unlock($1)", ADVISORY_LOCK_KEY)
    finally:
        await holder.close()
    assert (await upgrade(fresh)).after == HEAD
