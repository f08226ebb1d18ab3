"""Checks on what autogenerate drafts (python -m issuer.migrations), before it is written."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from alembic.operations import ops

__all__ = ["refuse_drops"]


def refuse_drops(_context: Any, _revision: Any, directives: list[ops.MigrationScript]) -> None:
    """Autogenerate drops a table or column the models lack. Warrant never drops data, and the
    usual cause is a model module missing from MODEL_MODULES: refuse rather than write it."""
    for script in directives:
        for upgrade_ops in script.upgrade_ops_list:
            drops = [drop for op in _walk(upgrade_ops.ops) if (drop := _dropped(op))]
            if drops:
                raise RuntimeError(
                    f"autogenerate would drop {', '.join(drops)}. Warrant never drops data; "
                    "is the model's module missing from issuer.db.MODEL_MODULES?"
                )


def _walk(operations: Iterable[ops.MigrateOperation]) -> Iterable[ops.MigrateOperation]:
    for operation in operations:
        yield operation
        if isinstance(operation, ops.OpContainer):
            yield from _walk(operation.ops)


def _dropped(operation: ops.MigrateOperation) -> str | None:
    """What the operation drops that holds data, if anything."""
    if isinstance(operation, ops.DropColumnOp):
        return f"column {operation.table_name}.{operation.column_name}"
    if isinstance(operation, ops.DropTableOp):
        return f"table {operation.table_name}"
    return None
