"""Fixtures for the broker's storage tests: a schema-ready engine on each database backend, with
the broker's tables, and a tenant to own integrations."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from issuer.db import create_engine
from issuer.migrations import upgrade
from issuer.tenants import SqlTenantStore
from tests.issuer.conftest import Clock

FLOOR_SECONDS = 900  # the vending floor the stores are built with: boto3's 15-minute window


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on a fresh database (SQLite and PostgreSQL), migrated to the current schema."""
    engine = create_engine(database_url)
    await upgrade(engine)
    yield engine
    await engine.dispose()


@pytest.fixture
def tenants(engine: AsyncEngine, clock: Clock) -> SqlTenantStore:
    """The SQL tenant store on the same database."""
    return SqlTenantStore(engine, clock)


@pytest.fixture
async def acme(tenants: SqlTenantStore) -> str:
    """A tenant 'acme' that exists; its slug."""
    return (await tenants.add("acme")).slug
