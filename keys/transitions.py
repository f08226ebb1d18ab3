"""What a Plan does to a set of records, and the invariants every persisted set must keep.

Pure: the store generates the new keys and hands their records in; nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime

from keys.errors import KeysError
from keys.manifest import consistency_problem
from keys.model import KeyRecord, KeyState
from keys.protocols import Plan

__all__ = ["SIGNING_STATES", "apply_plan", "check_invariants", "transition"]

# States whose private key is kept: a pending key will sign, the active key signs.
SIGNING_STATES = frozenset({KeyState.PENDING, KeyState.ACTIVE})
# A retired or revoked key has lost its private half, so it can never sign again.
_ALLOWED = {
    KeyState.PENDING: frozenset({KeyState.ACTIVE, KeyState.RETIRED, KeyState.REVOKED}),
    KeyState.ACTIVE: frozenset({KeyState.RETIRED, KeyState.REVOKED}),
    KeyState.RETIRED: frozenset({KeyState.REVOKED}),
    KeyState.REVOKED: frozenset[KeyState](),
}
# Only records whose tokens no longer matter may leave the manifest.
_REMOVABLE = frozenset({KeyState.RETIRED, KeyState.REVOKED})


def transition(record: KeyRecord, target: KeyState, now: datetime) -> KeyRecord:
    """`record` moved to `target`, stamped `now`; KeysError if that move is not allowed."""
    if target not in _ALLOWED[record.state]:
        raise KeysError(f"key {record.kid} cannot go from {record.state.value} to {target.value}")
    if target is KeyState.ACTIVE:
        return replace(record, state=target, activated_at=now)
    if target is KeyState.RETIRED:
        return replace(record, state=target, retired_at=now)
    return replace(record, state=target, revoked_at=now)


def apply_plan(
    records: Sequence[KeyRecord], plan: Plan, generated: Sequence[KeyRecord]
) -> tuple[KeyRecord, ...]:
    """The records after `plan`'s transitions and removals, plus the `generated` ones."""
    by_kid = {r.kid: r for r in records}
    for kid in [*plan.transitions, *plan.remove]:
        if kid not in by_kid:
            raise KeysError(f"the plan names kid {kid}, which is not in the store")
    for kid in plan.remove:
        if by_kid[kid].state not in _REMOVABLE:
            raise KeysError(
                f"key {kid} is {by_kid[kid].state.value}; only retired or revoked keys can be "
                "removed"
            )
    for new in generated:
        if new.state not in SIGNING_STATES:
            raise KeysError(f"a new key cannot start {new.state.value}")
    result = [
        r if (target := plan.transitions.get(r.kid)) is None else transition(r, target, plan.now)
        for r in records
        if r.kid not in plan.remove
    ]
    return (*result, *generated)


def check_invariants(records: Sequence[KeyRecord], max_published: int) -> None:
    """KeysError unless kids are unique, exactly one key is active (when any exists) and at
    most `max_published` keys are published."""
    problem = consistency_problem(records)
    if problem is not None:
        raise KeysError(f"refusing to write the key store: the result {problem}")
    published = sum(1 for r in records if r.published)
    if published > max_published:
        raise KeysError(
            f"refusing to write the key store: the result would publish {published} keys, "
            f"more than the limit of {max_published}; run 'warrant keys prune'"
        )
