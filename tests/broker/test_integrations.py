"""Integrations on SQLite and PostgreSQL: adding with validation, lookup by id or name, tenant
isolation, removal, and the cascades from tenants to integrations to sandboxes."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from broker.integrations import IntegrationRow, IntegrationStore, SqlIntegrationStore
from broker.model import Delivery, Integration, Method
from broker.sandboxes import SandboxRow, SqlSandboxStore
from broker.validation import EXTERNAL_ID
from issuer.db import session_factory
from issuer.errors import BadRequest, Conflict, InvalidSlug, NotFound, UnknownTenant
from issuer.tenants import SqlTenantStore
from tests.broker.conftest import FLOOR_SECONDS
from tests.issuer.conftest import Clock

ACCOUNT = "123456789012"
OTHER = "210987654321"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/warrant"
TARGET = f"arn:aws:iam::{OTHER}:role/deploy"
POLICY = '{"Version": "2012-10-17",\n "Statement": [{"Effect": "Allow", "Action": "s3:Get*"}]}'


@pytest.fixture
def store(engine: AsyncEngine, clock: Clock) -> SqlIntegrationStore:
    """The SQL integration store on a fresh database, with a 900 s vending floor."""
    return SqlIntegrationStore(engine, clock, floor_seconds=FLOOR_SECONDS)


async def _add(store: SqlIntegrationStore, tenant: str = "acme", name: str = "prod") -> Integration:
    return await store.add(tenant, name=name, account_id=ACCOUNT, role_arn=ROLE)


async def test_add_then_get_by_id_and_by_name(
    store: SqlIntegrationStore, acme: str, clock: Clock
) -> None:
    """An added OIDC integration reads back equal by id and by name, with the defaults filled in."""
    added = await store.add(acme, name="prod", account_id=ACCOUNT, role_arn=ROLE)
    assert re.fullmatch(r"int_[0-9a-f]{16}", added.id)
    assert added == Integration(
        id=added.id,
        tenant="acme",
        name="prod",
        account_id=ACCOUNT,
        role_arn=ROLE,
        region="us-east-1",
        method=Method.OIDC,
        session_duration=3600,
        created_at=clock(),
    )
    assert added.external_id is None
    assert await store.get(acme, added.id) == added
    assert await store.get(acme, "prod") == added
    assert await store.get_by_id(added.id) == added


async def test_every_field_round_trips(store: SqlIntegrationStore, acme: str) -> None:
    """An instance_role integration with a cross-account target, region, duration and policy reads
    back exactly, the policy byte for byte."""
    added = await store.add(
        acme,
        name="Deploy (eu) — 東京",
        account_id=ACCOUNT,
        role_arn=f"arn:aws:iam::{ACCOUNT}:role/path/to/warrant",
        region="eu-west-2",
        method="instance_role",
        target_role_arn=TARGET,
        session_duration=1800,
        session_policy=POLICY,
    )
    assert added.method is Method.INSTANCE_ROLE
    assert added.target_role_arn == TARGET
    assert added.region == "eu-west-2"
    assert added.session_duration == 1800
    assert added.session_policy == POLICY
    assert await store.get_by_id(added.id) == added


async def test_instance_role_gets_an_external_id_and_oidc_does_not(
    store: SqlIntegrationStore, acme: str
) -> None:
    """Each instance_role integration gets its own AWS-valid ExternalId; OIDC ones get none."""
    first = await store.add(
        acme, name="a", account_id=ACCOUNT, role_arn=ROLE, method=Method.INSTANCE_ROLE
    )
    second = await store.add(
        acme, name="b", account_id=ACCOUNT, role_arn=ROLE, method=Method.INSTANCE_ROLE
    )
    oidc = await store.add(acme, name="c", account_id=ACCOUNT, role_arn=ROLE)
    assert first.external_id is not None
    assert second.external_id is not None
    assert EXTERNAL_ID.fullmatch(first.external_id)
    assert first.external_id.startswith("warrant-")
    assert first.external_id != second.external_id
    assert oidc.external_id is None
    assert (await store.get(acme, "a")).external_id == first.external_id


async def test_timestamps_are_aware_utc(
    store: SqlIntegrationStore, acme: str, clock: Clock
) -> None:
    """created_at is stored as UTC and read back aware, whatever zone the clock runs in."""
    clock.now = datetime(2026, 3, 1, 14, 30, 5, 123456, tzinfo=timezone(timedelta(hours=2)))
    added = await _add(store)
    read = await store.get(acme, added.id)
    assert read.created_at == clock.now
    assert read.created_at.tzinfo is UTC


async def test_list_is_sorted_by_name_and_per_tenant(
    store: SqlIntegrationStore, tenants: SqlTenantStore, acme: str
) -> None:
    """A tenant lists only its own integrations, in code-point order of name."""
    await tenants.add("globex")
    for name in ["b", "a-c", "ab", "B"]:
        await _add(store, name=name)
    await _add(store, "globex", "other")
    assert [i.name for i in await store.list(acme)] == ["B", "a-c", "ab", "b"]
    assert [i.name for i in await store.list("globex")] == ["other"]


async def test_list_of_a_tenant_without_integrations_is_empty(
    store: SqlIntegrationStore, acme: str
) -> None:
    """An existing tenant with no integrations lists none."""
    assert await store.list(acme) == []


async def test_list_of_an_unknown_tenant_raises(store: SqlIntegrationStore) -> None:
    """Listing for a tenant that does not exist says so, rather than returning nothing."""
    with pytest.raises(UnknownTenant):
        await store.list("nobody")


@pytest.mark.parametrize("by", ["id", "name"])
async def test_remove_by_id_or_name(store: SqlIntegrationStore, acme: str, by: str) -> None:
    """Removing by id or by name deletes the integration and returns what was deleted."""
    added = await _add(store)
    assert await store.remove(acme, added.id if by == "id" else added.name) == added
    assert await store.list(acme) == []
    with pytest.raises(NotFound):
        await store.get(acme, added.id)
    with pytest.raises(NotFound, match="prod"):
        await store.remove(acme, "prod")


async def test_another_tenants_integration_is_not_found(
    store: SqlIntegrationStore, tenants: SqlTenantStore, acme: str
) -> None:
    """A tenant can neither read nor remove another tenant's integration, by id or name; the error
    is the same as for one that does not exist."""
    await tenants.add("globex")
    theirs = await _add(store, "globex", "secret-prod")
    for ref in (theirs.id, theirs.name):
        with pytest.raises(NotFound) as caught:
            await store.get(acme, ref)
        assert "globex" not in caught.value.message
        with pytest.raises(NotFound):
            await store.remove(acme, ref)
    missing_id = "int_" + "0" * 16
    with pytest.raises(NotFound) as unknown:
        await store.get(acme, missing_id)
    assert type(unknown.value) is NotFound
    assert await store.get("globex", theirs.id) == theirs


async def test_refs_that_name_nothing_are_not_found(store: SqlIntegrationStore, acme: str) -> None:
    """References no integration could have (empty, too long, NUL, wrong type) are NotFound, and
    never a database error on PostgreSQL."""
    await _add(store)
    for ref in ["", "x" * 101, "nul\x00", "int_XYZ", 42, None]:
        with pytest.raises(NotFound):
            await store.get(acme, ref)  # type: ignore[arg-type]
        with pytest.raises(NotFound):
            await store.get_by_id(ref)  # type: ignore[arg-type]


async def test_get_by_id_of_unknown_integration(store: SqlIntegrationStore, acme: str) -> None:
    """An id no integration has is NotFound, naming it."""
    with pytest.raises(NotFound, match="int_0000000000000000"):
        await store.get_by_id("int_0000000000000000")


async def test_duplicate_name_conflicts_and_other_tenants_may_reuse_it(
    store: SqlIntegrationStore, tenants: SqlTenantStore, acme: str
) -> None:
    """A second integration with the same name in a tenant is a Conflict naming it; another tenant
    may use the name."""
    first = await _add(store)
    with pytest.raises(Conflict) as caught:
        await _add(store)
    assert "'prod'" in caught.value.message
    assert await store.list(acme) == [first]
    await tenants.add("globex")
    assert (await _add(store, "globex")).name == "prod"


async def test_unknown_tenant_is_refused(store: SqlIntegrationStore) -> None:
    """Adding to a tenant that does not exist raises UnknownTenant."""
    with pytest.raises(UnknownTenant):
        await _add(store, "nobody")


async def test_invalid_tenant_slug_is_refused(store: SqlIntegrationStore) -> None:
    """A malformed tenant slug is InvalidSlug before any database work."""
    with pytest.raises(InvalidSlug):
        await _add(store, "Not A Slug")
    with pytest.raises(InvalidSlug):
        await store.get("Not A Slug", "prod")


async def test_unknown_method_lists_both(store: SqlIntegrationStore, acme: str) -> None:
    """A method other than oidc and instance_role is refused, naming both."""
    with pytest.raises(BadRequest) as caught:
        await store.add(acme, name="p", account_id=ACCOUNT, role_arn=ROLE, method="static")
    assert "'oidc'" in caught.value.message
    assert "'instance_role'" in caught.value.message


# Each case: what replaces the valid arguments, and words the error must contain.
INVALID_INPUT: list[tuple[dict[str, object], str]] = [
    ({"account_id": "12345"}, "account_id"),
    ({"role_arn": f"arn:aws:iam::{OTHER}:role/x"}, OTHER),
    ({"role_arn": "arn:aws:iam::123:role/x"}, "role_arn"),
    ({"region": "moon-1"}, "region"),
    ({"region": "cn-north-1"}, "aws-cn"),
    ({"target_role_arn": TARGET}, "only for method 'instance_role'"),
    ({"method": "instance_role", "target_role_arn": "role/x"}, "target_role_arn"),
    (
        {"method": "instance_role", "target_role_arn": f"arn:aws-cn:iam::{OTHER}:role/x"},
        "partition",
    ),
    (
        {"method": "instance_role", "target_role_arn": TARGET, "session_duration": 7200},
        "1 hour",
    ),
    ({"session_duration": 1200}, "at least 1500"),
    ({"session_duration": 50_000}, "900 to 43200"),
    ({"session_policy": "[]"}, "JSON object"),
    ({"name": ""}, "name"),
    ({"name": "int_0123456789abcdef"}, "looks like an integration id"),
]


async def test_invalid_input_is_refused_and_adds_nothing(
    store: SqlIntegrationStore, acme: str
) -> None:
    """Every validation rule applies on add; the error says what to fix and nothing is stored."""
    for fields, words in INVALID_INPUT:
        arguments: dict[str, object] = {"name": "p", "account_id": ACCOUNT, "role_arn": ROLE}
        with pytest.raises(BadRequest) as caught:
            await store.add(acme, **(arguments | fields))  # type: ignore[arg-type]
        assert words in caught.value.message, fields
    assert await store.list(acme) == []


async def test_region_defaults_to_the_partitions_own(store: SqlIntegrationStore, acme: str) -> None:
    """Without a region, an aws-cn role gets cn-north-1 and an aws-us-gov role us-gov-west-1."""
    china = await store.add(
        acme, name="cn", account_id=ACCOUNT, role_arn=f"arn:aws-cn:iam::{ACCOUNT}:role/w"
    )
    gov = await store.add(
        acme, name="gov", account_id=ACCOUNT, role_arn=f"arn:aws-us-gov:iam::{ACCOUNT}:role/w"
    )
    assert china.region == "cn-north-1"
    assert gov.region == "us-gov-west-1"


async def test_foreign_keys_are_enforced(engine: AsyncEngine, clock: Clock) -> None:
    """Both databases refuse a row whose tenant does not exist (SQLite has foreign keys switched
    on for every connection), so the cascades below are real."""
    if engine.dialect.name == "sqlite":
        async with engine.connect() as conn:
            assert (await conn.execute(text("PRAGMA foreign_keys"))).scalar() == 1
    row = IntegrationRow(
        id="int_" + "0" * 16,
        tenant="nobody",
        name="orphan",
        account_id=ACCOUNT,
        role_arn=ROLE,
        region="us-east-1",
        method="oidc",
        session_duration=3600,
        created_at=clock(),
    )
    with pytest.raises(IntegrityError):
        async with session_factory(engine).begin() as session:
            session.add(row)


async def _count(engine: AsyncEngine, row: type[IntegrationRow] | type[SandboxRow]) -> int:
    async with session_factory(engine)() as session:
        return int(await session.scalar(select(func.count()).select_from(row)) or 0)


async def test_removing_a_tenant_cascades_to_integrations_and_sandboxes(
    store: SqlIntegrationStore,
    tenants: SqlTenantStore,
    engine: AsyncEngine,
    clock: Clock,
    acme: str,
) -> None:
    """Deleting a tenant deletes its integrations and their sandboxes, and no one else's."""
    sandboxes = SqlSandboxStore(engine, clock)
    await tenants.add("globex")
    mine = await _add(store)
    theirs = await _add(store, "globex")
    for integration in (mine, theirs):
        for delivery in Delivery:
            await sandboxes.create(
                tenant=integration.tenant,
                integration_id=integration.id,
                delivery=delivery,
                ttl=timedelta(hours=1),
                session_policy=None,
            )
    assert await _count(engine, IntegrationRow) == 2
    assert await _count(engine, SandboxRow) == 4
    await tenants.remove(acme)
    assert await _count(engine, IntegrationRow) == 1
    assert await _count(engine, SandboxRow) == 2
    assert [s.integration_id for s in await sandboxes.list_live()] == [theirs.id, theirs.id]
    with pytest.raises(NotFound):
        await store.get_by_id(mine.id)


async def test_removing_an_integration_cascades_to_its_sandboxes(
    store: SqlIntegrationStore, engine: AsyncEngine, clock: Clock, acme: str
) -> None:
    """Deleting an integration deletes its sandboxes and leaves the others."""
    sandboxes = SqlSandboxStore(engine, clock)
    gone = await _add(store, name="gone")
    kept = await _add(store, name="kept")
    for integration in (gone, kept):
        await sandboxes.create(
            tenant=acme,
            integration_id=integration.id,
            delivery=Delivery.CONTAINER,
            ttl=timedelta(hours=1),
            session_policy=None,
        )
    await store.remove(acme, "gone")
    assert [s.integration_id for s in await sandboxes.list_live()] == [kept.id]


def _conforms(engine: AsyncEngine, clock: Clock) -> IntegrationStore:
    """Type-checked only: the SQL store satisfies the IntegrationStore protocol."""
    return SqlIntegrationStore(engine, clock, floor_seconds=FLOOR_SECONDS)


def test_store_satisfies_the_protocol(engine: AsyncEngine, clock: Clock) -> None:
    """SqlIntegrationStore is an IntegrationStore (checked by mypy; built here) and its repr holds
    nothing but the floor."""
    assert repr(_conforms(engine, clock)) == f"SqlIntegrationStore(floor_seconds={FLOOR_SECONDS})"
