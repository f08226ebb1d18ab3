"""Two processes rotating and pruning the same FileKeyStore at once."""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from keys.atomic import is_temp
from keys.file_store import FileKeyStore
from keys.model import Algorithm, KeyState
from keys.rotation import plan_bootstrap
from tests.keys.concurrency_worker import EPOCH, WorkerReport, rotate_and_prune

WORKERS = 2
ROUNDS = 20


@pytest.mark.slow
def test_two_processes_rotating_concurrently(tmp_path: Path) -> None:
    """Concurrent forced rotations and prunes from two processes serialize on the lock: the
    store stays loadable with one active key, and no generated or pruned key is lost."""
    directory = tmp_path / "keys"
    store = FileKeyStore(directory)
    asyncio.run(store.apply(lambda records: plan_bootstrap(records, EPOCH, Algorithm.ES256)))

    started = time.time()
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=WORKERS, mp_context=context) as pool:
        futures = [
            pool.submit(rotate_and_prune, str(directory), ROUNDS, started) for _ in range(WORKERS)
        ]
        reports: list[WorkerReport] = [f.result(timeout=60) for f in futures]

    snapshot = asyncio.run(FileKeyStore(directory).load())
    states = [r.state for r in snapshot.records]
    assert states.count(KeyState.ACTIVE) == 1
    assert sum(r.rotations for r in reports) > 0
    assert sum(r.pruned for r in reports) > 0
    generated = sum(r.generated for r in reports)
    pruned = sum(r.pruned for r in reports)
    assert len(snapshot.records) == 2 + generated - pruned
    signing = {r.kid for r in snapshot.records if r.state in {KeyState.ACTIVE, KeyState.PENDING}}
    assert {p.stem for p in directory.glob("*.pem")} == signing
    assert set(snapshot.signers) == signing
    assert [p.name for p in directory.iterdir() if is_temp(p)] == []
