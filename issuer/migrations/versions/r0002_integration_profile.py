"""Capability profile per integration (`incident` or `analysis`).

Added in place with a server default, so every existing integration reads `incident`, the profile
it was used with before the column existed. Databases on which the interim `create_schema` already
added the column are stamped at this revision instead of running it.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column(
        "integrations",
        sa.Column("profile", sa.String(16), server_default="incident", nullable=False),
    )


def downgrade() -> None:
    raise NotImplementedError("Warrant never downgrades: it would drop data (see the README)")
