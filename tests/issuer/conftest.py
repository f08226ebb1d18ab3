"""Fixtures for the issuer's storage tests: a schema-ready engine on each database backend."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Protocol

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from issuer.db import create_engine
from issuer.migrations import upgrade


class Clock(Protocol):
    """What these tests use of the shared `clock` fixture (tests/conftest.py's FakeClock): read
    it, set it, move it. Typed here so test modules need not import a conftest."""

    now: datetime

    def __call__(self) -> datetime: ...

    def advance(self, delta: timedelta) -> None: ...

    def seconds(self) -> float: ...


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on a fresh database (SQLite and PostgreSQL), migrated to the current schema."""
    engine = create_engine(database_url)
    await upgrade(engine)
    yield engine
    await engine.dispose()
