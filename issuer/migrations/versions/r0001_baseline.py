"""Baseline: the schema as the releases before migrations made it with `create_all`.

Every table of those releases except `integrations.profile` (revision 0002). Tables are created
only where missing (`IF NOT EXISTS`): a database made by an early release that lacks the later
tables is adopted here with its rows untouched, exactly as `create_all` would have completed it.
Names, types and constraints are those `create_all` produced, so an adopted database and a fresh
one are the same schema.

Revision ID: 0001
Revises: (none)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "tenants",
        sa.Column("slug", sa.String(63), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        if_not_exists=True,
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(12), primary_key=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        if_not_exists=True,
    )
    op.create_table(
        "integrations",
        sa.Column("id", sa.String(20), primary_key=True),
        sa.Column(
            "tenant",
            sa.String(63),
            sa.ForeignKey("tenants.slug", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("account_id", sa.String(12), nullable=False),
        sa.Column("role_arn", sa.String(2048), nullable=False),
        sa.Column("region", sa.String(32), nullable=False),
        sa.Column("method", sa.String(16), nullable=False),
        sa.Column("target_role_arn", sa.String(2048), nullable=True),
        sa.Column("external_id", sa.String(1224), nullable=True, unique=True),
        sa.Column("session_duration", sa.Integer(), nullable=False),
        sa.Column("session_policy", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("tenant", "name", name="uq_integrations_tenant_name"),
        if_not_exists=True,
    )
    op.create_index("ix_integrations_tenant", "integrations", ["tenant"], if_not_exists=True)
    op.create_table(
        "sandboxes",
        sa.Column("id", sa.String(24), primary_key=True),
        sa.Column(
            "tenant",
            sa.String(63),
            sa.ForeignKey("tenants.slug", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column(
            "integration_id",
            sa.String(20),
            sa.ForeignKey("integrations.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("delivery", sa.String(16), nullable=False),
        sa.Column("session_policy", sa.Text(), nullable=True),
        sa.Column("token_hash", sa.String(64), nullable=True, unique=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        if_not_exists=True,
    )
    op.create_index(
        "ix_sandboxes_integration_id", "sandboxes", ["integration_id"], if_not_exists=True
    )
    op.create_index("ix_sandboxes_tenant", "sandboxes", ["tenant"], if_not_exists=True)
    op.create_table(
        "integration_tests",
        sa.Column(
            "integration_id",
            sa.String(64),
            sa.ForeignKey("integrations.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("tested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("report", sa.Text(), nullable=False),
        if_not_exists=True,
    )


def downgrade() -> None:
    raise NotImplementedError("Warrant never downgrades: it would drop data (see the README)")
