"""Signing keys in the database: WARRANT_KEY_STORE=database and kms (issuer/key_store_sql.py).

Two new tables, so every replica signs with the same keys: `signing_keys` (one row per key: its
record, and where its private half lives, sealed under the key-encryption key or in AWS KMS) and
`signing_key_store` (one row: the revision replicas poll). No existing table or row changes; a
deployment on the file key store (the default) leaves both empty.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "signing_keys",
        sa.Column("kid", sa.String(43), primary_key=True),
        sa.Column("alg", sa.String(8), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("custody", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("activated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("public_jwk", sa.Text(), nullable=False),
        sa.Column("sealed_key", sa.LargeBinary(), nullable=True),
        sa.Column("kek_id", sa.String(32), nullable=True),
        sa.Column("kms_key_id", sa.String(2048), nullable=True),
        sa.CheckConstraint("custody IN ('database', 'kms')", name="ck_signing_keys_custody"),
        sa.CheckConstraint(
            "(custody = 'database' AND kms_key_id IS NULL) OR "
            "(custody = 'kms' AND kms_key_id IS NOT NULL AND sealed_key IS NULL)",
            name="ck_signing_keys_private_half",
        ),
        sa.CheckConstraint(
            "(sealed_key IS NULL AND kek_id IS NULL) OR "
            "(sealed_key IS NOT NULL AND kek_id IS NOT NULL)",
            name="ck_signing_keys_sealed_with",
        ),
    )
    op.create_table(
        "signing_key_store",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("revision", sa.String(64), nullable=False),
        sa.CheckConstraint("id = 1", name="ck_signing_key_store_one_row"),
    )


def downgrade() -> None:
    raise NotImplementedError("Warrant never downgrades: it would drop data (see the README)")
