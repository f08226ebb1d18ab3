"""A database made before a column existed gains it in place, with its rows intact."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from broker.integrations import SqlIntegrationStore
from broker.validation import profile
from issuer.db import create_schema
from issuer.errors import BadRequest
from tests.issuer.conftest import Clock

ROLE = "arn:aws:iam::123456789012:role/reader"


async def test_a_missing_column_is_added_and_rows_keep_their_data(
    engine: AsyncEngine, clock: Clock, acme: str
) -> None:
    """An integrations table without `profile` (as first released) gets the column with its
    default on the next start; the existing integration reads back unchanged."""
    store = SqlIntegrationStore(engine, clock, floor_seconds=1200)
    before = await store.add(acme, name="prod", account_id="123456789012", role_arn=ROLE)
    async with engine.begin() as conn:
        await conn.execute(text("ALTER TABLE integrations DROP COLUMN profile"))
    await create_schema(engine)
    after = await store.get(acme, "prod")
    assert after == before
    assert after.profile == "incident"
    analysis = await store.add(
        acme, name="cost", account_id="123456789012", role_arn=ROLE, profile="analysis"
    )
    assert (await store.get(acme, analysis.id)).profile == "analysis"


@pytest.mark.parametrize("value", ["ops", "", 3, "INCIDENT"])
def test_unknown_profiles_name_the_choices(value: object) -> None:
    """A profile outside incident/analysis is refused, naming both."""
    with pytest.raises(BadRequest, match="incident, analysis"):
        profile(value)
