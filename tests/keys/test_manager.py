"""KeyManager against a real FileKeyStore: each decision is made on the records under the lock."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import pytest

from keys.errors import RotationRefused, UnknownKey
from keys.file_store import FileKeyStore
from keys.jwk import jwks_document
from keys.manager import KeyManager
from keys.model import Algorithm, KeyRecord, KeyState, RotationPolicy
from keys.protocols import Plan
from tests.keys.fakes import FakeClock

POLICY = RotationPolicy()


def manager_at(directory: Path, clock: FakeClock) -> KeyManager:
    return KeyManager(FileKeyStore(directory), POLICY, Algorithm.ES256, clock)


def kid_in(records: Sequence[KeyRecord], state: KeyState) -> str:
    return next(r.kid for r in records if r.state is state)


@pytest.fixture
def manager(data_dir: Path, clock: FakeClock) -> KeyManager:
    return manager_at(data_dir / "keys", clock)


async def test_ensure_initialized_is_idempotent(manager: KeyManager) -> None:
    """The first call creates an active and a pending key; later calls change nothing."""
    first = await manager.ensure_initialized()
    assert sorted(r.state.value for r in first.records) == ["active", "pending"]
    again = await manager.ensure_initialized()
    assert again.records == first.records
    assert again.revision == first.revision
    assert await manager.list() == first.records


async def test_rotate_waits_for_publish_ahead(manager: KeyManager, clock: FakeClock) -> None:
    """A young pending key is not promoted (nothing is written); after publish_ahead it is."""
    snapshot = await manager.ensure_initialized()
    pending = kid_in(snapshot.records, KeyState.PENDING)
    active = kid_in(snapshot.records, KeyState.ACTIVE)
    clock.advance(POLICY.publish_ahead - timedelta(seconds=1))
    with pytest.raises(RotationRefused) as caught:
        await manager.rotate()
    assert caught.value.safe_at == snapshot.records[0].created_at + POLICY.publish_ahead
    assert await manager.store.revision() == snapshot.revision

    clock.advance(timedelta(seconds=1))
    outcome = await manager.rotate()
    assert (outcome.promoted_kid, outcome.retired_kid, outcome.forced) == (pending, active, False)
    records = await manager.list()
    assert kid_in(records, KeyState.ACTIVE) == pending
    assert kid_in(records, KeyState.RETIRED) == active


async def test_rotate_without_pending_publishes_one_then_refuses(
    manager: KeyManager, clock: FakeClock
) -> None:
    """With no pending key, rotate publishes one at once (starting its clock) and refuses,
    saying when to come back; coming back then succeeds."""
    await manager.ensure_initialized()

    def retire_pending(records: Sequence[KeyRecord]) -> Plan:
        return Plan(
            now=clock.now, transitions={kid_in(records, KeyState.PENDING): KeyState.RETIRED}
        )

    await manager.store.apply(retire_pending)
    with pytest.raises(RotationRefused, match="no pending key") as caught:
        await manager.rotate()
    assert caught.value.safe_at == clock.now + POLICY.publish_ahead
    records = await manager.list()
    new_pending = kid_in(records, KeyState.PENDING)
    assert next(r for r in records if r.kid == new_pending).created_at == clock.now

    clock.advance(POLICY.publish_ahead)
    assert (await manager.rotate()).promoted_kid == new_pending


async def test_forced_rotation_warns(manager: KeyManager) -> None:
    """A forced rotation of a young pending key succeeds and carries the verifier warning."""
    snapshot = await manager.ensure_initialized()
    outcome = await manager.rotate(force=True)
    assert outcome.forced
    assert outcome.promoted_kid == kid_in(snapshot.records, KeyState.PENDING)
    assert outcome.warning is not None
    assert "cached JWKS" in outcome.warning


async def test_decisions_use_the_records_under_the_lock(data_dir: Path, clock: FakeClock) -> None:
    """A second manager (another process, in effect) sees the first one's rotation when it
    decides, instead of rotating again from stale state."""
    first = manager_at(data_dir / "keys", clock)
    second = manager_at(data_dir / "keys", clock)
    await first.ensure_initialized()
    await second.list()  # second has now seen the old state
    clock.advance(POLICY.publish_ahead)
    await first.rotate()
    with pytest.raises(RotationRefused, match="becomes safe to activate"):
        await second.rotate()


async def test_revoke_active(manager: KeyManager) -> None:
    """Revoking the active key drops it from the JWKS and makes the pending key sign."""
    snapshot = await manager.ensure_initialized()
    active = kid_in(snapshot.records, KeyState.ACTIVE)
    outcome = await manager.revoke(active)
    assert outcome.was_active
    assert "invalid" in outcome.message
    records = await manager.list()
    assert kid_in(records, KeyState.ACTIVE) == outcome.promoted_kid
    assert kid_in(records, KeyState.PENDING) not in {active, outcome.promoted_kid}
    assert active.encode() not in jwks_document(records)
    with pytest.raises(RotationRefused, match="already revoked"):
        await manager.revoke(active)
    with pytest.raises(UnknownKey):
        await manager.revoke("no-such-kid")


async def test_prune_returns_removed_kids(manager: KeyManager, clock: FakeClock) -> None:
    """Prune removes a retired key only once retire_for has passed, and reports its kid."""
    await manager.ensure_initialized()
    clock.advance(POLICY.publish_ahead)
    retired = (await manager.rotate()).retired_kid
    assert await manager.prune() == []
    clock.advance(POLICY.retire_for)
    assert await manager.prune() == [retired]
    assert retired not in {r.kid for r in await manager.list()}


async def test_maintain_bootstraps_and_rotates_when_due(
    manager: KeyManager, clock: FakeClock
) -> None:
    """Maintenance creates the first keys, rotates once the period is over, then prunes."""
    first = await manager.maintain()
    old_active = kid_in(first.records, KeyState.ACTIVE)
    clock.advance(POLICY.rotation_period)
    rotated = await manager.maintain()
    assert kid_in(rotated.records, KeyState.ACTIVE) == kid_in(first.records, KeyState.PENDING)
    clock.advance(POLICY.retire_for)
    pruned = await manager.maintain()
    assert old_active not in {r.kid for r in pruned.records}
    assert pruned.revision != rotated.revision
