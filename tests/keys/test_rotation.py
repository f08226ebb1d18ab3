"""The rotation policy, table by table. Pure functions: no store, no disk."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

import pytest

from keys.errors import RotationRefused, UnknownKey
from keys.model import Algorithm, KeyRecord, KeyState, RotationPolicy
from keys.protocols import Plan
from keys.rotation import (
    format_time,
    plan_bootstrap,
    plan_ensure_pending,
    plan_maintenance,
    plan_prune,
    plan_revoke,
    plan_rotate,
    retire_after,
    safe_to_activate_at,
)
from tests.keys.fakes import FakeClock, record

A, P, R, X = KeyState.ACTIVE, KeyState.PENDING, KeyState.RETIRED, KeyState.REVOKED
ALG = Algorithm.ES256
POLICY = RotationPolicy()  # publish_ahead 1h, rotation 7d, max-age 300s, retire_for 70min
H = timedelta(hours=1)
M = timedelta(minutes=1)

# (kid, state, age): age is how long ago the key was created; the state's own timestamp
# (activated/retired/revoked) is given as a second age when it matters.
Spec = tuple[str, KeyState, timedelta] | tuple[str, KeyState, timedelta, timedelta]


def build(now: datetime, specs: Sequence[Spec]) -> list[KeyRecord]:
    records = []
    for spec in specs:
        kid, state, age = spec[0], spec[1], spec[2]
        stamp = now - (spec[3] if len(spec) == 4 else age)
        records.append(
            record(
                kid,
                state,
                now - age,
                activated_at=stamp if state is A else None,
                retired_at=stamp if state is R else None,
                revoked_at=stamp if state is X else None,
            )
        )
    return records


def generated(plan: Plan) -> list[KeyState]:
    return [new.state for new in plan.generate]


# --- bootstrap -----------------------------------------------------------------------------


def test_bootstrap_of_an_empty_store_makes_an_active_and_a_pending_key(clock: FakeClock) -> None:
    """A brand-new issuer gets a key that signs at once and a pending successor."""
    plan = plan_bootstrap([], clock.now, ALG)
    assert generated(plan) == [A, P]
    assert all(new.alg is ALG for new in plan.generate)
    assert plan.now == clock.now


def test_bootstrap_leaves_an_existing_store_alone(clock: FakeClock) -> None:
    """Bootstrapping a store that has keys plans nothing."""
    assert plan_bootstrap(build(clock.now, [("a", A, H)]), clock.now, ALG).empty


# --- rotate --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RotateCase:
    name: str
    specs: Sequence[Spec]
    force: bool
    promoted: str | None
    generate: Sequence[KeyState]
    forced: bool


ROTATE_CASES = [
    RotateCase("ready pending", [("a", A, 8 * 24 * H), ("p", P, 2 * H)], False, "p", [P], False),
    RotateCase("exactly publish_ahead old", [("a", A, 9 * H), ("p", P, H)], False, "p", [P], False),
    RotateCase(
        "oldest ready pending wins",
        [("a", A, 9 * H), ("p2", P, 2 * H), ("p1", P, 3 * H)],
        False,
        "p1",
        [P],
        False,
    ),
    RotateCase("force not needed", [("a", A, 9 * H), ("p", P, 2 * H)], True, "p", [P], False),
    RotateCase("force young pending", [("a", A, 9 * H), ("p", P, 10 * M)], True, "p", [P], True),
    RotateCase(
        "force oldest young pending",
        [("a", A, 9 * H), ("p2", P, 5 * M), ("p1", P, 10 * M)],
        True,
        "p1",
        [P],
        True,
    ),
    RotateCase("force with no pending", [("a", A, 9 * H)], True, None, [A, P], True),
]


@pytest.mark.parametrize("case", ROTATE_CASES, ids=lambda c: c.name)
def test_plan_rotate(case: RotateCase, clock: FakeClock) -> None:
    """Rotation promotes the expected key, retires the active one and publishes a successor."""
    records = build(clock.now, case.specs)
    outcome = plan_rotate(records, clock.now, POLICY, ALG, force=case.force)
    expected = {"a": R} | ({} if case.promoted is None else {case.promoted: A})
    assert dict(outcome.plan.transitions) == expected
    assert generated(outcome.plan) == list(case.generate)
    assert outcome.plan.remove == ()
    assert outcome.promoted_kid == case.promoted
    assert outcome.retired_kid == "a"
    assert outcome.forced is case.forced
    assert (outcome.warning is not None) is case.forced
    if outcome.warning is not None:
        assert "cached JWKS" in outcome.warning
        assert "5m" in outcome.warning  # the JWKS max-age the verifiers may hold on to


@pytest.mark.parametrize(
    ("specs", "safe_in", "words"),
    [
        ([("a", A, 9 * H), ("p", P, 10 * M)], 50 * M, ["pending key p", "--force"]),
        ([("a", A, 9 * H), ("p2", P, 1 * M), ("p1", P, 59 * M)], 1 * M, ["pending key p1"]),
        ([("a", A, 9 * H)], H, ["no pending key", "warrant keys rotate", "again after 1h"]),
    ],
    ids=["young pending", "oldest pending decides", "no pending"],
)
def test_plan_rotate_refuses_until_safe(
    specs: Sequence[Spec], safe_in: timedelta, words: Sequence[str], clock: FakeClock
) -> None:
    """Without force, rotation is refused with the time it becomes safe, in UTC ISO form."""
    with pytest.raises(RotationRefused) as caught:
        plan_rotate(build(clock.now, specs), clock.now, POLICY, ALG)
    safe_at = clock.now + safe_in
    assert caught.value.safe_at == safe_at
    message = str(caught.value)
    assert format_time(safe_at) in message
    assert format_time(safe_at).endswith("Z")
    for word in words:
        assert word in message


@pytest.mark.parametrize("force", [False, True])
def test_plan_rotate_refuses_past_max_published(force: bool, clock: FakeClock) -> None:
    """Even forced, a rotation that would publish more than max_published keys is refused,
    and the refusal says to prune and when the next retired key expires."""
    policy = RotationPolicy(max_published=3)
    specs: list[Spec] = [("a", A, 9 * H), ("p", P, 2 * H), ("r", R, 9 * H, 20 * M)]
    with pytest.raises(RotationRefused, match="warrant keys prune") as caught:
        plan_rotate(build(clock.now, specs), clock.now, policy, ALG, force=force)
    assert caught.value.safe_at == clock.now - 20 * M + policy.retire_for


def test_plan_rotate_of_an_empty_store_is_refused(clock: FakeClock) -> None:
    """There is nothing to rotate before the first keys exist."""
    with pytest.raises(RotationRefused, match="no active key"):
        plan_rotate([], clock.now, POLICY, ALG, force=True)


# --- ensure pending ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("specs", "expected"),
    [
        ([], []),
        ([("a", A, H)], [P]),
        ([("a", A, H), ("r", R, 2 * H)], [P]),
        ([("a", A, H), ("p", P, M)], []),
    ],
    ids=["empty store", "no pending", "only retired besides", "has pending"],
)
def test_plan_ensure_pending(
    specs: Sequence[Spec], expected: Sequence[KeyState], clock: FakeClock
) -> None:
    """A pending key is published only when a non-empty store has none."""
    plan = plan_ensure_pending(build(clock.now, specs), clock.now, POLICY, ALG)
    assert generated(plan) == list(expected)
    assert not plan.transitions


# --- revoke --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RevokeCase:
    name: str
    specs: Sequence[Spec]
    kid: str
    transitions: dict[str, KeyState]
    generate: Sequence[KeyState]
    was_active: bool
    promoted: str | None
    generated_active: bool
    words: Sequence[str] = field(default_factory=list)
    policy: RotationPolicy = POLICY


REVOKE_CASES = [
    RevokeCase(
        "active with young pending",
        [("a", A, 9 * H), ("p", P, 10 * M)],
        "a",
        {"a": X, "p": A},
        [P],
        True,
        "p",
        False,
        ["now invalid", "Key p signs now", "may reject new tokens"],
    ),
    RevokeCase(
        "active with ready pending",
        [("a", A, 9 * H), ("p", P, 2 * H)],
        "a",
        {"a": X, "p": A},
        [P],
        True,
        "p",
        False,
        ["now invalid", "Key p signs now."],
    ),
    RevokeCase(
        "active promotes oldest pending",
        [("a", A, 9 * H), ("p2", P, 1 * M), ("p1", P, 2 * M)],
        "a",
        {"a": X, "p1": A},
        [],
        True,
        "p1",
        False,
    ),
    RevokeCase(
        "active without pending",
        [("a", A, 9 * H)],
        "a",
        {"a": X},
        [A, P],
        True,
        None,
        True,
        ["now invalid", "brand-new key signs now", "may reject new tokens"],
    ),
    RevokeCase(
        "active without pending at capacity",
        [("a", A, 9 * H), ("r1", R, 9 * H, M), ("r2", R, 9 * H, M)],
        "a",
        {"a": X},
        [A],
        True,
        None,
        True,
        policy=RotationPolicy(max_published=3),
    ),
    RevokeCase(
        "only pending",
        [("a", A, 9 * H), ("p", P, M)],
        "p",
        {"p": X},
        [P],
        False,
        None,
        False,
        ["key p is revoked", "now invalid"],
    ),
    RevokeCase(
        "one of two pending",
        [("a", A, 9 * H), ("p", P, M), ("q", P, 2 * M)],
        "p",
        {"p": X},
        [],
        False,
        None,
        False,
    ),
    RevokeCase(
        "retired",
        [("a", A, 9 * H), ("p", P, M), ("r", R, 9 * H, M)],
        "r",
        {"r": X},
        [],
        False,
        None,
        False,
    ),
]


@pytest.mark.parametrize("case", REVOKE_CASES, ids=lambda c: c.name)
def test_plan_revoke(case: RevokeCase, clock: FakeClock) -> None:
    """Revocation drops the key, keeps exactly one active key and a pending one, and says so."""
    outcome = plan_revoke(
        build(clock.now, case.specs), case.kid, clock.now, ALG, policy=case.policy
    )
    assert dict(outcome.plan.transitions) == case.transitions
    assert generated(outcome.plan) == list(case.generate)
    assert outcome.kid == case.kid
    assert outcome.was_active is case.was_active
    assert outcome.promoted_kid == case.promoted
    assert outcome.generated_active is case.generated_active
    for word in case.words:
        assert word in outcome.message


def test_plan_revoke_unknown_kid(clock: FakeClock) -> None:
    """Revoking a kid the store does not have raises UnknownKey naming it."""
    with pytest.raises(UnknownKey, match="nope"):
        plan_revoke(build(clock.now, [("a", A, H)]), "nope", clock.now, ALG, policy=POLICY)


def test_plan_revoke_already_revoked(clock: FakeClock) -> None:
    """Revoking twice is refused rather than silently repeated."""
    records = build(clock.now, [("a", A, H), ("x", X, 2 * H, M)])
    with pytest.raises(RotationRefused, match="already revoked"):
        plan_revoke(records, "x", clock.now, ALG, policy=POLICY)


# --- prune ---------------------------------------------------------------------------------

RETIRE_FOR = POLICY.retire_for


@pytest.mark.parametrize(
    ("spec", "removed"),
    [
        (("r", R, 30 * H, RETIRE_FOR), True),
        (("r", R, 30 * H, RETIRE_FOR + timedelta(seconds=1)), True),
        (("r", R, 30 * H, RETIRE_FOR - timedelta(seconds=1)), False),
        (("x", X, 30 * H, timedelta(0)), True),
        (("p", P, 300 * H), False),
    ],
    ids=[
        "retired exactly retire_for ago",
        "retired longer",
        "retired 1s too recently",
        "revoked",
        "old pending",
    ],
)
def test_plan_prune_boundaries(spec: Spec, removed: bool, clock: FakeClock) -> None:
    """Retired keys go once retire_for has passed, revoked records at once, others never."""
    records = build(clock.now, [("a", A, 300 * H), spec])
    plan = plan_prune(records, clock.now, POLICY)
    assert plan.remove == ((spec[0],) if removed else ())
    assert not plan.generate
    assert not plan.transitions


def test_retire_after_and_safe_to_activate_at(clock: FakeClock) -> None:
    """retire_after is retired_at + retire_for (None unless retired); a key is safe to
    activate publish_ahead after it was created."""
    retired, active = build(clock.now, [("r", R, 9 * H, H), ("a", A, 2 * H)])
    assert retire_after(retired, POLICY) == clock.now - H + timedelta(minutes=70)
    assert retire_after(active, POLICY) is None
    assert safe_to_activate_at(active, POLICY) == clock.now - H


# --- maintenance ---------------------------------------------------------------------------

WEEK = POLICY.rotation_period


@dataclass(frozen=True)
class MaintenanceCase:
    name: str
    specs: Sequence[Spec]
    transitions: dict[str, KeyState]
    generate: Sequence[KeyState]
    remove: Sequence[str] = ()
    policy: RotationPolicy = POLICY


MAINTENANCE_CASES = [
    MaintenanceCase("empty store bootstraps", [], {}, [A, P]),
    MaintenanceCase("not due, has pending", [("a", A, WEEK - M), ("p", P, 2 * H)], {}, []),
    MaintenanceCase("not due, no pending", [("a", A, H)], {}, [P]),
    MaintenanceCase("due and ready", [("a", A, WEEK), ("p", P, 2 * H)], {"a": R, "p": A}, [P]),
    MaintenanceCase("due, pending too young", [("a", A, 2 * WEEK), ("p", P, 10 * M)], {}, []),
    MaintenanceCase("due, no pending", [("a", A, 2 * WEEK)], {}, [P]),
    MaintenanceCase(
        "due, ready, with expired retired key",
        [("a", A, WEEK), ("p", P, 2 * H), ("r", R, 3 * WEEK, WEEK)],
        {"a": R, "p": A},
        [P],
        ["r"],
    ),
    MaintenanceCase(
        "prune only",
        [("a", A, H), ("p", P, M), ("r", R, 3 * WEEK, WEEK), ("x", X, H, M)],
        {},
        [],
        ["r", "x"],
    ),
    MaintenanceCase(
        "over capacity prunes first",
        [("a", A, WEEK), ("p", P, 2 * H), ("r1", R, WEEK, M), ("r2", R, WEEK, WEEK)],
        {},
        [],
        ["r2"],
        RotationPolicy(max_published=3),
    ),
]


@pytest.mark.parametrize("case", MAINTENANCE_CASES, ids=lambda c: c.name)
def test_plan_maintenance(case: MaintenanceCase, clock: FakeClock) -> None:
    """The periodic job bootstraps, keeps a pending key, rotates only when due and safe, and
    prunes expired keys, all in one plan."""
    plan = plan_maintenance(build(clock.now, case.specs), clock.now, case.policy, ALG)
    assert dict(plan.transitions) == case.transitions
    assert generated(plan) == list(case.generate)
    assert sorted(plan.remove) == sorted(case.remove)


def test_plan_maintenance_over_capacity_with_nothing_to_prune_is_refused(
    clock: FakeClock,
) -> None:
    """When rotation is due but the JWKS is full of live keys, maintenance says to prune."""
    policy = RotationPolicy(max_published=3)
    records = build(clock.now, [("a", A, WEEK), ("p", P, 2 * H), ("r", R, WEEK, M)])
    with pytest.raises(RotationRefused, match="prune"):
        plan_maintenance(records, clock.now, policy, ALG)


def test_maintenance_over_time_keeps_one_active_and_a_bounded_jwks(clock: FakeClock) -> None:
    """Running maintenance every hour for eight weeks, applying each plan by hand, the store
    always has exactly one active key, a pending key, and at most four published keys."""
    records: list[KeyRecord] = []
    kids = (f"k{n}" for n in itertools.count())
    rotations = 0
    for _ in range(8 * 7 * 24):
        plan = plan_maintenance(records, clock.now, POLICY, ALG)
        rotations += sum(1 for state in plan.transitions.values() if state is R)
        records = _apply(records, plan, kids)
        states = [r.state for r in records]
        assert states.count(A) == 1
        assert states.count(P) >= 1
        assert sum(1 for r in records if r.published) <= 4
        clock.advance(H)
    assert rotations == 7  # one a week, after the first week


def _apply(records: Sequence[KeyRecord], plan: Plan, kids: Iterator[str]) -> list[KeyRecord]:
    """What a store does with a plan, minus the keys and the disk."""
    result = []
    for old in records:
        if old.kid in plan.remove:
            continue
        target = plan.transitions.get(old.kid)
        if target is A:
            result.append(replace(old, state=A, activated_at=plan.now))
        elif target is R:
            result.append(replace(old, state=R, retired_at=plan.now))
        elif target is X:
            result.append(replace(old, state=X, revoked_at=plan.now))
        else:
            result.append(old)
    for new in plan.generate:
        activated = plan.now if new.state is A else None
        result.append(record(next(kids), new.state, plan.now, activated_at=activated))
    return result
