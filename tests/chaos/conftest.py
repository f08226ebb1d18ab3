"""The chaos suite's fixtures: the world the STS, IMDS and audit-log scenarios share, and one seed
per test for every random choice it makes (kill delays, operation mixes), printed when the test
fails and replayable with WARRANT_CHAOS_SEED.

Timing still varies from run to run (a kill lands where the worker happens to be), so a replayed
seed reproduces the choices, not necessarily the exact crash point."""

from __future__ import annotations

import os
import random
from collections.abc import Generator, Iterator
from datetime import timedelta

import pytest

from tests.chaos.world import ChaosWorld, chaos_world

SEED_VARIABLE = "WARRANT_CHAOS_SEED"
# The shared world's sessions live 15 s; the broker refreshes them from 11 s left (4 s old) and
# serves them down to 2 s left. The 9 s between is where STS faults must stay invisible: a failed
# refresh is retried after 2.5-5 s (the cache's first backoff step), well inside it.
LIFETIME = timedelta(seconds=15)
REFRESH_AHEAD = 11
FLOOR = 2
_SEED = pytest.StashKey[int]()


@pytest.fixture
def chaos_seed(request: pytest.FixtureRequest) -> int:
    """This test's seed: WARRANT_CHAOS_SEED if set, else a fresh random one."""
    fixed = os.environ.get(SEED_VARIABLE)
    seed = int(fixed) if fixed else random.SystemRandom().randrange(2**32)
    request.node.stash[_SEED] = seed
    return seed


@pytest.fixture
def chaos_rng(chaos_seed: int) -> random.Random:
    """A generator seeded with this test's seed."""
    return random.Random(chaos_seed)  # noqa: S311 - seeded, replayable choices, not secrets


@pytest.fixture(scope="package")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChaosWorld]:
    """One world for the STS, IMDS and audit-log tests: each scenario gets integrations of its
    own and undoes its faults."""
    with chaos_world(
        tmp_path_factory.mktemp("chaos") / "var",
        lifetime=LIFETIME,
        floor=FLOOR,
        refresh_ahead=REFRESH_AHEAD,
    ) as running:
        yield running


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    seed = item.stash.get(_SEED, None)
    if seed is not None and report.failed:
        report.sections.append(
            ("chaos seed", f"seed {seed}: rerun with {SEED_VARIABLE}={seed} to replay its choices")
        )
    return report
