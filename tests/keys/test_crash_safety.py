"""Crash safety: a FileKeyStore killed at any write step leaves a store that loads, has exactly
one active key, and is either untouched or fully changed; the next write cleans up."""

from __future__ import annotations

import shutil
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from keys.atomic import is_temp
from keys.file_store import FileKeyStore
from keys.manager import KeyManager
from keys.model import Algorithm, KeyRecord, KeyState, RotationPolicy
from keys.protocols import KeySnapshot, Plan
from tests.keys.fakes import FakeClock, FaultyFilesystem, SimulatedCrash

ALG = Algorithm.ES256
SIGNING = {KeyState.ACTIVE, KeyState.PENDING}

Summary = tuple[tuple[tuple[str, str, object, object, object], ...], tuple[str, ...]]


def manager_for(
    directory: Path, clock: FakeClock, fs: FaultyFilesystem | None = None
) -> KeyManager:
    return KeyManager(FileKeyStore(directory, fs=fs), RotationPolicy(), ALG, clock)


def summarize(before: KeySnapshot, records: Sequence[KeyRecord]) -> Summary:
    """Old keys by kid with their state and stamps; new keys by state only (kids are random)."""
    old = {r.kid for r in before.records}
    kept = tuple(
        sorted(
            (r.kid, r.state.value, r.activated_at, r.retired_at, r.revoked_at)
            for r in records
            if r.kid in old
        )
    )
    return kept, tuple(sorted(r.state.value for r in records if r.kid not in old))


def copy_store(template: Path, target: Path) -> Path:
    shutil.copytree(template, target)
    return target


def leftovers(directory: Path, records: Sequence[KeyRecord]) -> set[str]:
    """Files that should not be there: temp files, and private keys of non-signing keys."""
    wanted = {"manifest.json", ".lock"} | {f"{r.kid}.pem" for r in records if r.state in SIGNING}
    return {p.name for p in directory.iterdir() if is_temp(p) or p.name not in wanted}


Setup = Callable[[KeyManager, FakeClock], Awaitable[object]]
Operation = Callable[[KeyManager], Awaitable[object]]


async def _nothing(manager: KeyManager, clock: FakeClock) -> None:
    return None


async def _bootstrapped(manager: KeyManager, clock: FakeClock) -> None:
    await manager.ensure_initialized()
    clock.advance(timedelta(hours=2))


async def _due_with_expired_retired_key(manager: KeyManager, clock: FakeClock) -> None:
    await _bootstrapped(manager, clock)
    await manager.rotate()
    clock.advance(timedelta(days=8))


async def _without_pending(manager: KeyManager, clock: FakeClock) -> None:
    await manager.ensure_initialized()

    def retire_pending(records: Sequence[KeyRecord]) -> Plan:
        pending = next(r.kid for r in records if r.state is KeyState.PENDING)
        return Plan(now=clock.now, transitions={pending: KeyState.RETIRED})

    await manager.store.apply(retire_pending)


async def _revoke_active(manager: KeyManager) -> None:
    active = next(r.kid for r in await manager.list() if r.state is KeyState.ACTIVE)
    await manager.revoke(active)


@dataclass(frozen=True)
class Scenario:
    name: str
    setup: Setup
    operation: Operation
    new_keys: int


SCENARIOS = [
    Scenario("bootstrap", _nothing, lambda m: m.ensure_initialized(), 2),
    Scenario("rotation", _bootstrapped, lambda m: m.rotate(), 1),
    Scenario(
        "maintenance rotates and prunes", _due_with_expired_retired_key, lambda m: m.maintain(), 1
    ),
    Scenario("revoke active", _bootstrapped, _revoke_active, 1),
    Scenario("forced rotation, no pending", _without_pending, lambda m: m.rotate(force=True), 2),
]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
async def test_crash_at_every_write_step(
    scenario: Scenario, tmp_path: Path, clock: FakeClock
) -> None:
    """Killed at write step k, for every k, the store loads with exactly one active key, shows
    either the old state or the completed operation (never a mix), and the next write removes
    every orphan and temp file."""
    template = tmp_path / "template"
    template.mkdir(mode=0o700)
    await scenario.setup(manager_for(template, clock), clock)
    before = await FileKeyStore(template).load()
    untouched = summarize(before, before.records)

    full_run = FaultyFilesystem()
    completed_dir = copy_store(template, tmp_path / "completed")
    await scenario.operation(manager_for(completed_dir, clock, full_run))
    completed = summarize(before, (await FileKeyStore(completed_dir).load()).records)
    assert len(completed[1]) == scenario.new_keys
    # Private keys first, then the manifest (the commit point), then only deletions. A store
    # with no manifest yet gets an empty one before anything else.
    commit = len(full_run.steps) - 1 - full_run.steps[::-1].index("write manifest.json")
    before_commit = full_run.steps[:commit]
    if not before.records:
        assert before_commit[0] == "write manifest.json"
        before_commit = before_commit[1:]
    new_pems = {f"write {kid}.pem" for kid in _new_kids(before, completed_dir)}
    assert sorted(before_commit) == sorted(new_pems)
    assert len(new_pems) == scenario.new_keys
    assert all(step.startswith("remove ") for step in full_run.steps[commit + 1 :])

    for k, step in enumerate(full_run.steps):
        directory = copy_store(template, tmp_path / f"crash-{k}")
        with pytest.raises(SimulatedCrash):
            await scenario.operation(manager_for(directory, clock, FaultyFilesystem(crash_at=k)))
        after = await FileKeyStore(directory).load()
        states = [r.state for r in after.records]
        assert states.count(KeyState.ACTIVE) == (1 if after.records else 0), step
        assert set(after.signers) == {r.kid for r in after.records if r.state in SIGNING}
        assert summarize(before, after.records) == (untouched if k <= commit else completed), step

        recovered = await _next_write(manager_for(directory, clock))
        assert leftovers(directory, recovered.records) == set(), step


def _new_kids(before: KeySnapshot, directory: Path) -> set[str]:
    return {p.stem for p in directory.glob("*.pem")} - {r.kid for r in before.records}


async def _next_write(manager: KeyManager) -> KeySnapshot:
    if not await manager.list():
        return await manager.ensure_initialized()
    await manager.rotate(force=True)
    return await manager.store.load()
