"""A worker process for the concurrency test: forced rotations and prunes in a loop.

Importable by a spawned interpreter, so it lives outside the test module.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from keys.errors import RotationRefused
from keys.file_store import FileKeyStore
from keys.manager import KeyManager
from keys.model import Algorithm, KeyState, RotationPolicy

# Simulated time runs this many times faster than real time, on one timeline shared by every
# worker, so retired keys expire while the test runs (retire_for, 70 minutes, is 12 real ms).
TIME_SCALE = 360_000
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class WorkerReport:
    generated: int
    pruned: int
    refused: int
    rotations: int


class ScaledClock:
    """Wall time since `started` (time.time() seconds), sped up by TIME_SCALE."""

    def __init__(self, started: float) -> None:
        self._started = started

    def __call__(self) -> datetime:
        return EPOCH + timedelta(seconds=(time.time() - self._started) * TIME_SCALE)


def rotate_and_prune(directory: str, rounds: int, started: float) -> WorkerReport:
    """Run `rounds` forced rotations, each followed by a prune, against the store."""
    return asyncio.run(_run(Path(directory), rounds, started))


async def _run(directory: Path, rounds: int, started: float) -> WorkerReport:
    store = FileKeyStore(directory, lock_timeout=timedelta(seconds=30))
    manager = KeyManager(store, RotationPolicy(), Algorithm.ES256, ScaledClock(started))
    generated = pruned = refused = rotations = 0
    for _ in range(rounds):
        try:
            outcome = await manager.rotate(force=True)
        except RotationRefused:
            refused += 1
        else:
            rotations += 1
            generated += len(outcome.plan.generate)
        pruned += len(await manager.prune())
        states = [r.state for r in await manager.list()]
        if states.count(KeyState.ACTIVE) != 1:
            raise AssertionError(f"saw {states.count(KeyState.ACTIVE)} active keys")
    return WorkerReport(generated=generated, pruned=pruned, refused=refused, rotations=rotations)
