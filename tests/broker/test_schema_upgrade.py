"""Databases made before migrations upgrade in place: every row intact, the app working on them.

Each legacy database is built with the DDL the old `create_all` (and the interim
`_add_missing_columns`) emitted, captured from that code, then filled the way the old stores
wrote rows."""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.ext.asyncio import AsyncEngine

from broker.connection_store import SqlConnectionStore
from broker.integrations import SqlIntegrationStore
from broker.sandboxes import SqlSandboxStore, hash_token
from broker.validation import profile
from issuer.apikeys import Role, SqlApiKeyStore, hash_key
from issuer.db import UtcDateTime, create_engine, load_models
from issuer.errors import BadRequest
from issuer.migrations import status, upgrade
from issuer.migrations.runner import BASELINE_TABLES
from issuer.tenants import SqlTenantStore
from tests.e2e import cli, running_warrant
from tests.issuer.conftest import Clock
from tests.issuer.test_migrations import HEAD, REVISIONS

ROLE = "arn:aws:iam::123456789012:role/reader"
CREATED = datetime(2026, 3, 1, 12, 30, 15, 250000, tzinfo=UTC)

# What `Base.metadata.create_all` emitted before migrations (SQLAlchemy 2.1; the same on both
# databases but for the timestamp type), in its order. `{profile}` is where the release that added
# the column put it.
TIMESTAMP = {"sqlite": "DATETIME", "postgresql": "TIMESTAMP WITH TIME ZONE"}
TENANTS = """CREATE TABLE tenants (
    slug VARCHAR(63) NOT NULL,
    name VARCHAR(200) NOT NULL,
    created_at {ts} NOT NULL,
    PRIMARY KEY (slug)
)"""
API_KEYS = """CREATE TABLE api_keys (
    id VARCHAR(12) NOT NULL,
    role VARCHAR(16) NOT NULL,
    key_hash VARCHAR(64) NOT NULL,
    created_at {ts} NOT NULL,
    revoked_at {ts},
    PRIMARY KEY (id),
    UNIQUE (key_hash)
)"""
INTEGRATIONS = """CREATE TABLE integrations (
    id VARCHAR(20) NOT NULL,
    tenant VARCHAR(63) NOT NULL,
    name VARCHAR(100) NOT NULL,
    account_id VARCHAR(12) NOT NULL,
    role_arn VARCHAR(2048) NOT NULL,
    region VARCHAR(32) NOT NULL,
    method VARCHAR(16) NOT NULL,
    target_role_arn VARCHAR(2048),
    external_id VARCHAR(1224),
    session_duration INTEGER NOT NULL,
    session_policy TEXT,{profile}
    created_at {ts} NOT NULL,
    PRIMARY KEY (id),
    CONSTRAINT uq_integrations_tenant_name UNIQUE (tenant, name),
    FOREIGN KEY(tenant) REFERENCES tenants (slug) ON DELETE CASCADE,
    UNIQUE (external_id)
)"""
INLINE_PROFILE = "\n    profile VARCHAR(16) DEFAULT 'incident' NOT NULL,"
INTEGRATIONS_INDEX = "CREATE INDEX ix_integrations_tenant ON integrations (tenant)"
SANDBOXES = """CREATE TABLE sandboxes (
    id VARCHAR(24) NOT NULL,
    tenant VARCHAR(63) NOT NULL,
    integration_id VARCHAR(20) NOT NULL,
    delivery VARCHAR(16) NOT NULL,
    session_policy TEXT,
    token_hash VARCHAR(64),
    created_at {ts} NOT NULL,
    expires_at {ts} NOT NULL,
    revoked_at {ts},
    PRIMARY KEY (id),
    FOREIGN KEY(tenant) REFERENCES tenants (slug) ON DELETE CASCADE,
    FOREIGN KEY(integration_id) REFERENCES integrations (id) ON DELETE CASCADE,
    UNIQUE (token_hash)
)"""
SANDBOXES_INDEXES = (
    "CREATE INDEX ix_sandboxes_integration_id ON sandboxes (integration_id)",
    "CREATE INDEX ix_sandboxes_tenant ON sandboxes (tenant)",
)
INTEGRATION_TESTS = """CREATE TABLE integration_tests (
    integration_id VARCHAR(64) NOT NULL,
    tested_at {ts} NOT NULL,
    report TEXT NOT NULL,
    PRIMARY KEY (integration_id),
    FOREIGN KEY(integration_id) REFERENCES integrations (id) ON DELETE CASCADE
)"""
# What the interim `_add_missing_columns` ran on a database from before the column.
INTERIM_ADD_PROFILE = (
    "ALTER TABLE \"integrations\" ADD COLUMN profile VARCHAR(16) DEFAULT 'incident' NOT NULL"
)


@dataclass(frozen=True)
class Legacy:
    """One shape a pre-migration database can have."""

    name: str
    broker: bool  # made by a release with the broker's tables
    profile: str  # "": none; "inline": create_all with the column; "added": interim ALTER

    def ddl(self, dialect: str) -> list[str]:
        ts = TIMESTAMP[dialect]
        statements = [TENANTS.format(ts=ts), API_KEYS.format(ts=ts)]
        if not self.broker:
            return statements
        inline = INLINE_PROFILE if self.profile == "inline" else ""
        statements += [
            INTEGRATIONS.format(ts=ts, profile=inline),
            INTEGRATIONS_INDEX,
            SANDBOXES.format(ts=ts),
            *SANDBOXES_INDEXES,
            INTEGRATION_TESTS.format(ts=ts),
        ]
        if self.profile == "added":
            statements.append(INTERIM_ADD_PROFILE)
        return statements


LEGACY = [
    Legacy("issuer-only release", broker=False, profile=""),
    Legacy("broker release before profiles", broker=True, profile=""),
    Legacy("profile added in place by the interim code", broker=True, profile="added"),
    Legacy("created with the profile column", broker=True, profile="inline"),
]


# The rows, typed as the old ORM models bound them (timestamps through UtcDateTime).
def _table(name: str, *columns: str, timestamps: tuple[str, ...] = ()) -> sa.TableClause:
    return sa.table(
        name, *(sa.column(c) for c in columns), *(sa.column(t, UtcDateTime()) for t in timestamps)
    )


T_TENANTS = _table("tenants", "slug", "name", timestamps=("created_at",))
T_API_KEYS = _table("api_keys", "id", "role", "key_hash", timestamps=("created_at", "revoked_at"))
INTEGRATION_COLUMNS = (
    "id",
    "tenant",
    "name",
    "account_id",
    "role_arn",
    "region",
    "method",
    "target_role_arn",
    "external_id",
    "session_duration",
    "session_policy",
)
T_INTEGRATIONS = _table("integrations", *INTEGRATION_COLUMNS, timestamps=("created_at",))
T_INTEGRATIONS_WITH_PROFILE = _table(
    "integrations", *INTEGRATION_COLUMNS, "profile", timestamps=("created_at",)
)
T_SANDBOXES = _table(
    "sandboxes",
    "id",
    "tenant",
    "integration_id",
    "delivery",
    "session_policy",
    "token_hash",
    timestamps=("created_at", "expires_at", "revoked_at"),
)
T_INTEGRATION_TESTS = _table(
    "integration_tests", "integration_id", "report", timestamps=("tested_at",)
)
PRIMARY_KEYS = {
    "tenants": "slug",
    "api_keys": "id",
    "integrations": "id",
    "sandboxes": "id",
    "integration_tests": "integration_id",
}


def _secret(prefix: str) -> str:
    return prefix + base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()


@dataclass
class Fixture:
    """What was written into the legacy database, and the secrets that authenticate against it."""

    admin_key: str
    revoked_key: str
    sandbox_token: str
    dump: dict[str, list[tuple[Any, ...]]]


PROD = "int_00000000000000a1"
COST = "int_00000000000000b2"
SANDBOX = "sbx_000000000000000000c3"


async def build_legacy(engine: AsyncEngine, legacy: Legacy, now: datetime) -> Fixture:
    admin_key, revoked_key = _secret("wrn_admin_"), _secret("wrn_admin_")
    token = _secret("wsb_")
    async with engine.begin() as conn:
        for statement in legacy.ddl(engine.dialect.name):
            await conn.execute(sa.text(statement))
        await conn.execute(
            sa.insert(T_TENANTS),
            [
                {"slug": "acme", "name": "Acme Corp", "created_at": CREATED},
                {"slug": "globex", "name": "globex", "created_at": CREATED + timedelta(days=1)},
            ],
        )
        await conn.execute(
            sa.insert(T_API_KEYS),
            [
                {
                    "id": "0123456789ab",
                    "role": "admin",
                    "key_hash": hash_key(admin_key),
                    "created_at": CREATED,
                    "revoked_at": None,
                },
                {
                    "id": "ba9876543210",
                    "role": "admin",
                    "key_hash": hash_key(revoked_key),
                    "created_at": CREATED,
                    "revoked_at": CREATED + timedelta(hours=1),
                },
            ],
        )
        if legacy.broker:
            await _fill_broker(conn, legacy, token, now)
    return Fixture(admin_key, revoked_key, token, await dump(engine, legacy))


async def _fill_broker(conn: Any, legacy: Legacy, token: str, now: datetime) -> None:
    integrations: list[dict[str, Any]] = [
        {
            "id": PROD,
            "tenant": "acme",
            "name": "prod",
            "account_id": "123456789012",
            "role_arn": ROLE,
            "region": "eu-west-1",
            "method": "oidc",
            "target_role_arn": None,
            "external_id": None,
            "session_duration": 3600,
            "session_policy": None,
            "created_at": CREATED,
        },
        {
            "id": COST,
            "tenant": "acme",
            "name": "cost",
            "account_id": "210987654321",
            "role_arn": "arn:aws:iam::210987654321:role/base",
            "region": "us-east-1",
            "method": "instance_role",
            "target_role_arn": "arn:aws:iam::210987654321:role/target",
            "external_id": "warrant-" + "e" * 40,
            "session_duration": 7200,
            "session_policy": '{"Version":"2012-10-17","Statement":[]}',
            "created_at": CREATED + timedelta(minutes=5),
        },
    ]
    if legacy.profile:
        integrations[1]["profile"] = "analysis"  # set by that release; must survive
        await conn.execute(
            sa.insert(T_INTEGRATIONS_WITH_PROFILE), [{"profile": "incident", **integrations[0]}]
        )
        await conn.execute(sa.insert(T_INTEGRATIONS_WITH_PROFILE), [integrations[1]])
    else:
        await conn.execute(sa.insert(T_INTEGRATIONS), integrations)
    await conn.execute(
        sa.insert(T_SANDBOXES),
        [
            {
                "id": SANDBOX,
                "tenant": "acme",
                "integration_id": PROD,
                "delivery": "container",
                "session_policy": None,
                "token_hash": hash_token(token),
                "created_at": now - timedelta(minutes=1),
                "expires_at": now + timedelta(hours=1),
                "revoked_at": None,
            }
        ],
    )
    report: dict[str, Any] = {
        "integration": PROD,
        "profile": "incident",
        "status": "active",
        "tested_at": "2026-03-01T12:31:00Z",
        "account": "123456789012",
        "assumed_role_arn": "arn:aws:sts::123456789012:assumed-role/reader/warrant",
        "error": None,
        "diagnosis": None,
        "capabilities": [],
    }
    await conn.execute(
        sa.insert(T_INTEGRATION_TESTS),
        [{"integration_id": PROD, "report": json.dumps(report), "tested_at": CREATED}],
    )


async def dump(engine: AsyncEngine, legacy: Legacy) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every legacy table, as the database returns it (the columns the legacy
    schema had), in primary-key order."""
    tables = ["tenants", "api_keys"]
    if legacy.broker:
        tables += ["integrations", "sandboxes", "integration_tests"]
    result = {}
    async with engine.connect() as conn:
        for table in tables:
            columns = await conn.run_sync(_column_names, table)
            if not legacy.profile and "profile" in columns:
                columns.remove("profile")  # the column the upgrade added
            selected = ", ".join(columns)
            rows = await conn.execute(
                sa.text(f"SELECT {selected} FROM {table} ORDER BY {PRIMARY_KEYS[table]}")  # noqa: S608 - names from the schema
            )
            result[table] = [tuple(row) for row in rows]
    return result


def baseline_differences(conn: sa.Connection) -> list[Any]:
    """How the baseline tables differ from the models (nothing: as a fresh database has them).
    Tables added by later revisions are tests/issuer/test_migrations.py's concern."""

    def baseline(_obj: Any, name: str | None, kind: str, _reflected: bool, _other: Any) -> bool:
        return kind != "table" or name in BASELINE_TABLES

    options = {"compare_type": True, "compare_server_default": True, "include_object": baseline}
    context = MigrationContext.configure(conn, opts=options)
    return list(compare_metadata(context, load_models()))


def _column_names(conn: sa.Connection, table: str) -> list[str]:
    return [column["name"] for column in sa.inspect(conn).get_columns(table)]


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on a fresh, empty database; each test builds its legacy schema in it."""
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


@pytest.mark.parametrize("legacy", LEGACY, ids=[legacy.name for legacy in LEGACY])
async def test_a_legacy_database_upgrades_in_place(
    engine: AsyncEngine, clock: Clock, legacy: Legacy
) -> None:
    """A database made by an earlier release is adopted at the right revision and upgraded: every
    row reads back byte for byte, the schema is then exactly a fresh one's, and the stores work on
    it (keys authenticate, integrations read with their profile, sandboxes authenticate, reports
    load, foreign-key cascades still fire)."""
    fixture = await build_legacy(engine, legacy, clock())
    before = await status(engine)
    assert before.current is None
    assert before.adopt_at == ("0002" if legacy.profile else "")

    result = await upgrade(engine)
    assert result.after == HEAD
    stamped = REVISIONS.index("0002") + 1 if legacy.profile else 0
    assert result.applied == REVISIONS[stamped:]
    assert await dump(engine, legacy) == fixture.dump
    async with engine.connect() as conn:
        assert await conn.run_sync(baseline_differences) == []

    tenants = SqlTenantStore(engine, clock)
    assert [(t.slug, t.name, t.created_at) for t in await tenants.list()] == [
        ("acme", "Acme Corp", CREATED),
        ("globex", "globex", CREATED + timedelta(days=1)),
    ]
    keys = SqlApiKeyStore(engine, clock)
    authenticated = await keys.authenticate(fixture.admin_key)
    assert authenticated is not None
    assert (authenticated.key_id, authenticated.role) == ("0123456789ab", Role.ADMIN)
    assert await keys.authenticate(fixture.revoked_key) is None

    store = SqlIntegrationStore(engine, clock, floor_seconds=1200)
    added = await store.add(
        "globex", name="new", account_id="123456789012", role_arn=ROLE, profile="analysis"
    )
    assert (await store.get("globex", "new")).profile == "analysis" == added.profile
    if not legacy.broker:
        return
    prod, cost = await store.get("acme", "prod"), await store.get("acme", COST)
    assert (prod.id, prod.role_arn, prod.session_duration, prod.profile) == (
        PROD,
        ROLE,
        3600,
        "incident",
    )
    assert cost.profile == ("analysis" if legacy.profile else "incident")
    assert cost.external_id == "warrant-" + "e" * 40
    sandbox = await SqlSandboxStore(engine, clock).authenticate(fixture.sandbox_token)
    assert sandbox is not None
    assert (sandbox.id, sandbox.integration_id) == (SANDBOX, PROD)
    report = await SqlConnectionStore(engine).get(PROD)
    assert report is not None
    assert report.status == "active"

    await tenants.remove("acme")
    async with engine.connect() as conn:
        for table in ("integrations", "sandboxes", "integration_tests"):
            count = await conn.scalar(sa.text(f"SELECT count(*) FROM {table}"))  # noqa: S608
            assert count == (1 if table == "integrations" else 0), table


async def test_the_service_starts_on_a_legacy_database(
    tmp_path: Path, database_url: str, engine: AsyncEngine, clock: Clock
) -> None:
    """`warrant serve` on a database from before migrations: with WARRANT_DATABASE_AUTO_MIGRATE=0
    it refuses and says what to run; by default it upgrades at startup and serves the old data to
    the old admin key."""
    legacy = LEGACY[1]
    fixture = await build_legacy(engine, legacy, clock())
    await engine.dispose()
    data_dir = tmp_path / "var"
    env = {"WARRANT_DATABASE_URL": database_url}

    refused = running_warrant(data_dir, WARRANT_DATABASE_AUTO_MIGRATE="0", **env)
    with pytest.raises(AssertionError, match="WARRANT_DATABASE_AUTO_MIGRATE is off"), refused:
        pass
    assert (await status(engine)).current is None

    admin = {"Authorization": f"Bearer {fixture.admin_key}"}
    with running_warrant(data_dir, **env) as warrant:
        async with httpx.AsyncClient(base_url=warrant.internal_url, headers=admin) as client:
            listed = await client.get("/v1/tenants")
            integrations = await client.get("/v1/tenants/acme/integrations")
        assert listed.status_code == 200, listed.text
        assert [t["slug"] for t in listed.json()["tenants"]] == ["acme", "globex"]
        assert integrations.status_code == 200, integrations.text
        assert {i["name"]: i["profile"] for i in integrations.json()["integrations"]} == {
            "prod": "incident",
            "cost": "incident",
        }
        current = cli(warrant.env, "db", "current", "--check")
        assert current.stdout.strip() == f"database schema at {HEAD} (head)"
    after = await dump(engine, legacy)
    for table, rows in fixture.dump.items():
        assert set(rows) <= set(after[table]), table  # startup only added (an agent key)


@pytest.mark.parametrize("value", ["ops", "", 3, "INCIDENT"])
def test_unknown_profiles_name_the_choices(value: object) -> None:
    """A profile outside incident/analysis is refused, naming both."""
    with pytest.raises(BadRequest, match="incident, analysis"):
        profile(value)
