"""The lifecycle moves a store accepts, and the record-set invariants it enforces."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest

from keys.errors import KeysError
from keys.model import KeyState
from keys.protocols import Plan
from keys.transitions import apply_plan, check_invariants, transition
from tests.keys.fakes import record

A, P, R, X = KeyState.ACTIVE, KeyState.PENDING, KeyState.RETIRED, KeyState.REVOKED
T0 = datetime(2026, 1, 1, tzinfo=UTC)
T1 = datetime(2026, 1, 2, tzinfo=UTC)

ALLOWED = {(P, A), (P, R), (P, X), (A, R), (A, X), (R, X)}


@pytest.mark.parametrize(("source", "target"), list(itertools.product(KeyState, KeyState)))
def test_transition_table(source: KeyState, target: KeyState) -> None:
    """Only the forward moves are allowed; nothing returns to pending or active once its
    private key may be gone, and a revoked key stays revoked."""
    before = record("k", source, T0)
    if (source, target) not in ALLOWED:
        with pytest.raises(KeysError, match="cannot go from"):
            transition(before, target, T1)
        return
    after = transition(before, target, T1)
    assert after.state is target
    stamp = {A: after.activated_at, R: after.retired_at, X: after.revoked_at}[target]
    assert stamp == T1
    assert after.created_at == T0


@pytest.mark.parametrize(("state", "removable"), [(P, False), (A, False), (R, True), (X, True)])
def test_only_retired_or_revoked_records_can_be_removed(state: KeyState, removable: bool) -> None:
    """A plan may drop retired and revoked records, never a key that signs or will sign."""
    records = (
        [record("a", A, T0), record("k", state, T0)] if state is not A else [record("k", A, T0)]
    )
    plan = Plan(now=T1, remove=("k",))
    if removable:
        assert [r.kid for r in apply_plan(records, plan, ())] == ["a"]
    else:
        with pytest.raises(KeysError, match="only retired or revoked"):
            apply_plan(records, plan, ())


def test_apply_plan_appends_generated_records() -> None:
    """Generated records follow the transformed existing ones."""
    records = [record("a", A, T0), record("p", P, T0)]
    plan = Plan(now=T1, transitions={"a": R, "p": A})
    result = apply_plan(records, plan, [record("n", P, T1)])
    assert [(r.kid, r.state) for r in result] == [("a", R), ("p", A), ("n", P)]


@pytest.mark.parametrize(
    ("states", "limit", "problem"),
    [
        ([], 10, None),
        ([A, P, R], 3, None),
        ([A, P, R, X], 3, None),
        ([A, P, R, R], 3, "more than the limit of 3"),
        ([P, R], 10, "0 active keys"),
        ([A, A], 10, "2 active keys"),
    ],
)
def test_check_invariants(states: list[KeyState], limit: int, problem: str | None) -> None:
    """One active key whenever any exists, and revoked keys do not count toward the limit."""
    records = [record(f"k{i}", state, T0) for i, state in enumerate(states)]
    if problem is None:
        check_invariants(records, limit)
        return
    with pytest.raises(KeysError, match=problem):
        check_invariants(records, limit)


def test_duplicate_kids_are_refused() -> None:
    """Two records with one kid can never be written."""
    with pytest.raises(KeysError, match="more than once"):
        check_invariants([record("k", A, T0), record("k", P, T0)], 10)
