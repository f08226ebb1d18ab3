"""Alembic's entry point. `issuer.migrations` runs it with an open connection in
`config.attributes["connection"]`; there is no alembic.ini and no offline (SQL script) mode."""

from __future__ import annotations

from alembic import context

from issuer.db import load_models
from issuer.migrations.autogen import refuse_drops


def run() -> None:
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError(
            "Warrant's migrations run through 'warrant db upgrade' (or at startup), "
            "not the alembic command"
        )
    context.configure(
        connection=connection,
        # The models, for autogenerate (python -m issuer.migrations).
        target_metadata=load_models(),
        # Batch operations work on both databases; SQLite needs them to alter a column.
        render_as_batch=True,
        process_revision_directives=refuse_drops,
    )
    with context.begin_transaction():
        context.run_migrations()


run()
