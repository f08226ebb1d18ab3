"""The database schema, as Alembic migrations: `versions/` holds the revisions, `runner` applies
them (at startup, and through `warrant db upgrade` / `warrant db current`). See README here for
how to add a revision."""

from issuer.migrations.runner import SchemaStatus, UpgradeResult, prepare, status, upgrade

__all__ = ["SchemaStatus", "UpgradeResult", "prepare", "status", "upgrade"]
