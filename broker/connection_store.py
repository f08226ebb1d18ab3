"""The last test-connection report of each integration (a table of its own, so databases made
before it only gain a table)."""

from __future__ import annotations

import json
from datetime import datetime

from sqlalchemy import ForeignKey, String, Text, select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import Mapped, mapped_column

from broker.connection import ConnectionReport
from broker.integrations import IntegrationRow  # noqa: F401 - the foreign key's table
from issuer.db import Base, UtcDateTime, database_errors, session_factory


class ConnectionTestRow(Base):
    __tablename__ = "integration_tests"

    integration_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("integrations.id", ondelete="CASCADE"), primary_key=True
    )
    tested_at: Mapped[datetime] = mapped_column(UtcDateTime())
    report: Mapped[str] = mapped_column(Text())


class SqlConnectionStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._sessions = session_factory(engine)

    async def save(self, report: ConnectionReport) -> None:
        with database_errors():
            async with self._sessions.begin() as session:
                row = await session.get(ConnectionTestRow, report.integration_id)
                text = json.dumps(report.to_json())
                if row is None:
                    session.add(
                        ConnectionTestRow(
                            integration_id=report.integration_id,
                            tested_at=report.tested_at,
                            report=text,
                        )
                    )
                else:
                    row.tested_at = report.tested_at
                    row.report = text

    async def get(self, integration_id: str) -> ConnectionReport | None:
        with database_errors():
            async with self._sessions() as session:
                row = (
                    await session.execute(
                        select(ConnectionTestRow).where(
                            ConnectionTestRow.integration_id == integration_id
                        )
                    )
                ).scalar_one_or_none()
        return None if row is None else ConnectionReport.from_json(json.loads(row.report))
