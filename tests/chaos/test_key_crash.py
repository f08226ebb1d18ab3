"""SIGKILL during key rotation and store writes, for real: worker processes rotating, maintaining,
pruning and revoking in a tight loop on one key store are killed at random moments, and so is
the real `warrant keys rotate --force` while it holds the store's lock. The trials run on each
store the service offers for keys it holds itself: the file store, and the database store
(sealed keys) on SQLite and on the real PostgreSQL.

After every kill the store must load, hold exactly one active key, serve a JWKS of exactly its
published keys and have lost no published key. The file store must also ignore temp files and
orphaned private keys and keep private keys 0600; the database store must hold a sealed private
key for every pending and active key and for no other, and leave no lock behind (a write takes
it within its lock timeout).

"Lost" is defined against the rotation policy itself: the only changes a kill may leave behind
are those of the operation that was in flight, applied whole (the plan the pure policy functions
compute for it), or nothing at all. So a key leaves the JWKS only when the policy removes it
(prune: a retired key past retire_after, or a revoked record) or an explicit revocation names
it; a pending or active key is never dropped.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import random
import signal
import stat
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from issuer.db import create_engine
from issuer.key_store_sql import SqlKeyStore, signing_keys
from issuer.migrations import upgrade
from keys.atomic import is_temp
from keys.errors import RotationRefused, UnknownKey
from keys.file_store import FileKeyStore
from keys.jwk import jwks_document
from keys.model import Algorithm, KeyRecord, KeyState
from keys.protocols import KeySnapshot, Plan, Planner
from keys.rotation import (
    plan_bootstrap,
    plan_maintenance,
    plan_prune,
    plan_revoke,
    plan_rotate,
)
from keys.sealed import KeyEncryptionKey, SealedCustodian
from keys.transitions import SIGNING_STATES, apply_plan
from tests.chaos.key_worker import POLICY
from tests.e2e import WARRANT, base_env

pytestmark = [pytest.mark.chaos, pytest.mark.slow]

_T = TypeVar("_T")

REPO = Path(__file__).resolve().parents[2]
TRIALS = 120
# Kill after this long (seconds, uniform): from before the first operation starts to several
# operations in; fsyncs dominate, so most kills land inside a write.
KILL_AFTER = (0.005, 0.120)
# A database worker first connects (a few ms, more on a busy machine) and commits with a round
# trip or two; later kills give each trial a few operations.
DATABASE_KILL_AFTER = (0.010, 0.200)
# The simulated clock of the first trial; later trials continue where the last one stopped.
EPOCH = datetime(2030, 1, 1, tzinfo=UTC)
CLI_TRIALS = 5
# After `warrant keys rotate` takes the store's exclusive lock, kill it within this long: the
# lock is held while it generates an RSA key and writes the files.
CLI_KILL_AFTER_LOCK = (0.0, 0.080)
# A worker or CLI that does not report within this long is stuck, not slow.
REPORT_TIMEOUT = 30.0

Summary = tuple[tuple[tuple[Any, ...], ...], tuple[tuple[str, str], ...]]


# -- the pure model: what an operation may change ---------------------------------------------


def summarize(records: Sequence[KeyRecord], old: set[str]) -> Summary:
    """Keys of `old` by kid with state and stamps; the others (generated since, with random kids)
    by state and algorithm only."""
    kept = tuple(
        sorted(
            (r.kid, r.state.value, r.activated_at, r.retired_at, r.revoked_at)
            for r in records
            if r.kid in old
        )
    )
    new = tuple(sorted((r.state.value, r.alg.value) for r in records if r.kid not in old))
    return kept, new


def planned(records: Sequence[KeyRecord], entry: dict[str, Any]) -> Plan:
    """The plan the rotation policy makes for the journal's `start` entry on `records`, exactly
    as the worker's KeyManager call does (a refusal changes nothing)."""
    at = datetime.fromisoformat(entry["at"])
    alg = Algorithm(entry["alg"])
    operation, kid = entry["start"], entry["kid"]
    try:
        if operation == "rotate":
            return plan_rotate(records, at, POLICY, alg, force=True).plan
        if operation == "maintain":
            return plan_maintenance(records, at, POLICY, alg)
        if operation == "prune":
            return plan_prune(records, at, POLICY)
        if operation == "revoke" and kid is not None:
            return plan_revoke(records, kid, at, alg, policy=POLICY).plan
        return plan_bootstrap(records, at, alg)
    except (RotationRefused, UnknownKey):
        return Plan(now=at)


def applied(records: Sequence[KeyRecord], plan: Plan) -> tuple[KeyRecord, ...]:
    """`records` after `plan`, with placeholder records for the keys it generates."""
    generated = [
        KeyRecord(kid=f"new-{i}", alg=g.alg, state=g.state, created_at=plan.now, public_jwk={})
        for i, g in enumerate(plan.generate)
    ]
    return apply_plan(records, plan, generated)


def unpublished_by(plan: Plan) -> set[str]:
    """Kids the policy takes out of the JWKS with this plan: removed or revoked."""
    revoked = {kid for kid, state in plan.transitions.items() if state is KeyState.REVOKED}
    return set(plan.remove) | revoked


def decode_record(entry: dict[str, Any]) -> KeyRecord:
    def stamp(name: str) -> datetime | None:
        value = entry[name]
        return None if value is None else datetime.fromisoformat(value)

    created = stamp("created_at")
    assert created is not None
    return KeyRecord(
        kid=entry["kid"],
        alg=Algorithm(entry["alg"]),
        state=KeyState(entry["state"]),
        created_at=created,
        public_jwk={},
        activated_at=stamp("activated_at"),
        retired_at=stamp("retired_at"),
        revoked_at=stamp("revoked_at"),
    )


def read_journal(path: Path) -> list[dict[str, Any]]:
    """The journal's entries; a last line cut short by the kill is dropped."""
    if not path.exists():
        return []
    entries: list[dict[str, Any]] = []
    lines = path.read_bytes().split(b"\n")
    for number, line in enumerate(lines):
        if not line:
            continue
        try:
            entries.append(json.loads(line))
        except ValueError:
            assert number == len(lines) - 1, f"{path}: line {number + 1} is torn but not last"
    return entries


# -- what must hold after every kill -----------------------------------------------------------


@dataclass
class Tally:
    trials: int = 0
    operations: int = 0
    committed_in_flight: int = 0  # the kill came after the in-flight operation's commit point
    untouched_in_flight: int = 0  # ...or before it (or between operations)
    interrupted: int = 0  # ...of those, before the commit of an operation that changes the store
    leftovers: int = 0  # trials that left a temp file or an orphaned private key behind
    in_flight: Counter[str] = field(default_factory=Counter)

    def line(self) -> str:
        return (
            f"{self.trials} kills, {self.operations} completed operations; in-flight operation "
            f"committed {self.committed_in_flight}, not {self.untouched_in_flight} "
            f"({self.interrupted} cut short a change); "
            f"{self.leftovers} left temp files or orphans; in flight: {dict(self.in_flight)}"
        )


class TrialStore(Protocol):
    """The store under trial, as the test sees it (the workers open their own, see `spec`)."""

    spec: dict[str, str]  # the worker's "store" object

    def load(self) -> KeySnapshot: ...

    def apply(self, planner: Planner) -> KeySnapshot: ...

    def check(self, snapshot: KeySnapshot, context: str) -> None:
        """What this kind of store must look like after a kill, beyond the records."""
        ...

    def leftovers(self, records: Sequence[KeyRecord]) -> set[str]:
        """What a kill left behind that the next write cleans up."""
        ...

    def settle(self) -> None:
        """Return once nothing the killed worker started can still change the store."""
        ...

    def cli_env(self, data_dir: Path) -> dict[str, str]:
        """The environment for the real `warrant` CLI on this store."""
        ...


class FileTrialStore:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.spec = {"kind": "file", "path": str(directory)}

    def load(self) -> KeySnapshot:
        return asyncio.run(FileKeyStore(self.directory).load())

    def apply(self, planner: Planner) -> KeySnapshot:
        return asyncio.run(FileKeyStore(self.directory).apply(planner))

    def check(self, snapshot: KeySnapshot, context: str) -> None:
        directory = self.directory
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, context
        for path in directory.iterdir():
            mode = stat.S_IMODE(path.stat().st_mode)
            assert path.is_file(), f"{context}: {path.name} is not a regular file"
            assert mode == 0o600, f"{context}: {path.name} has mode {mode:o}"
            assert (
                path.name in {"manifest.json", ".lock"} or path.suffix == ".pem" or is_temp(path)
            ), f"{context}: unexpected file {path.name}"

    def settle(self) -> None:
        pass  # the worker wrote the files itself: once it is dead, nothing changes them

    def leftovers(self, records: Sequence[KeyRecord]) -> set[str]:
        """Temp files and private keys of keys that are not pending or active."""
        keep = {f"{r.kid}.pem" for r in records if r.state in SIGNING_STATES}
        return {
            p.name
            for p in self.directory.iterdir()
            if is_temp(p) or (p.suffix == ".pem" and p.name not in keep)
        }

    def cli_env(self, data_dir: Path) -> dict[str, str]:
        assert self.directory == data_dir / "keys"
        return base_env(data_dir)


KEK = base64.b64encode(bytes(range(32))).decode()
_OTHERS_ACTIVE = (
    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
    "AND pid <> pg_backend_pid() AND state = 'active'"
)


class DatabaseTrialStore:
    """SqlKeyStore with sealed keys; each call opens its own engine, as a replica would."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.spec = {"kind": "database", "url": url, "kek": KEK}

    def _run(self, work: Callable[[AsyncEngine, SqlKeyStore], Coroutine[Any, Any, _T]]) -> _T:
        return self._runner.run(work(self._engine, self._store))

    def __enter__(self) -> DatabaseTrialStore:
        # One loop and one engine for the test's own reads and writes: a connection per check
        # would double the trials' time. The workers each have their own.
        self._runner = asyncio.Runner()
        self._engine = self._runner.run(_engine(self.url))
        custodian = SealedCustodian(KeyEncryptionKey(base64.b64decode(KEK)))
        self._store = SqlKeyStore(self._engine, custodian)
        return self

    def __exit__(self, *_: object) -> None:
        self._runner.run(self._engine.dispose())
        self._runner.close()

    def migrate(self) -> None:
        self._run(lambda engine, _: upgrade(engine))

    def load(self) -> KeySnapshot:
        return self._run(lambda _, store: store.load())

    def apply(self, planner: Planner) -> KeySnapshot:
        return self._run(lambda _, store: store.apply(planner))

    def check(self, snapshot: KeySnapshot, context: str) -> None:
        """A transaction commits whole or not at all: a sealed private key for exactly the
        pending and active keys, nothing left for a later write to clean up, and no lock held
        by the killed worker's session (a write takes it within its 10 s lock timeout)."""

        async def rows(engine: AsyncEngine, _: SqlKeyStore) -> list[tuple[str, str, bool]]:
            async with engine.connect() as conn:
                keys = signing_keys.c
                result = await conn.execute(
                    select(keys.kid, keys.state, keys.sealed_key.is_not(None))
                )
                return [(kid, state, bool(sealed)) for kid, state, sealed in result]

        signing = {state.value for state in SIGNING_STATES}
        stored = self._run(rows)
        for kid, state, sealed in stored:
            assert sealed == (state in signing), (
                f"{context}: {state} key {kid} {'holds' if sealed else 'lacks'} a private key"
            )
        assert {kid for kid, _, _ in stored} == {r.kid for r in snapshot.records}, context
        unchanged = self.apply(lambda _: Plan(now=datetime.now(UTC)))
        assert unchanged.revision == snapshot.revision, context

    def leftovers(self, records: Sequence[KeyRecord]) -> set[str]:
        del records
        return set()  # check() has proved there are none

    def settle(self) -> None:
        """PostgreSQL finishes a statement (a COMMIT included) that the client sent before it
        died: wait until no other session on the database is still running one. (SQLite's
        writes happen in the worker itself.)"""
        if not self.url.startswith("postgresql"):
            return

        async def busy(engine: AsyncEngine, _: SqlKeyStore) -> int:
            async with engine.connect() as conn:
                result = await conn.execute(text(_OTHERS_ACTIVE))
                return int(result.scalar_one())

        deadline = time.monotonic() + REPORT_TIMEOUT
        while self._run(busy):
            assert time.monotonic() < deadline, "the killed worker's statement never finished"
            time.sleep(0.005)

    def cli_env(self, data_dir: Path) -> dict[str, str]:
        return base_env(
            data_dir,
            WARRANT_KEY_STORE="database",
            WARRANT_DATABASE_URL=self.url,
            WARRANT_KEY_ENCRYPTION_KEY=KEK,
        )


async def _engine(url: str) -> AsyncEngine:
    return create_engine(url)


def check_store(store: TrialStore, context: str) -> KeySnapshot:
    """The store loads and is usable, and holds what it must. Returns it."""
    snapshot = store.load()
    records = snapshot.records
    active = [r for r in records if r.state is KeyState.ACTIVE]
    assert len(active) == 1, f"{context}: {len(active)} active keys"
    signing = {r.kid for r in records if r.state in SIGNING_STATES}
    assert set(snapshot.signers) == signing, f"{context}: signers are not the signing keys"
    asyncio.run(snapshot.signers[active[0].kid].sign(b"chaos.check"))
    published = {r.kid for r in records if r.published}
    jwks = json.loads(jwks_document(records))
    assert {k["kid"] for k in jwks["keys"]} == published, f"{context}: JWKS is not the published"
    assert len(published) <= POLICY.max_published, context
    store.check(snapshot, context)
    return snapshot


def check_trial(
    store: TrialStore, before: tuple[KeyRecord, ...], journal: list[dict[str, Any]], tally: Tally
) -> tuple[KeyRecord, ...]:
    """Every completed operation did exactly what the policy plans, and the kill left either the
    last completed state or the in-flight operation applied whole. Returns the records now."""
    state = before
    in_flight: dict[str, Any] | None = None
    for entry in journal:
        if "start" in entry:
            in_flight = entry
            continue
        assert in_flight is not None, "a done line without its start line"
        old = {r.kid for r in state}
        expected = summarize(applied(state, planned(state, in_flight)), old)
        reported = tuple(decode_record(r) for r in entry["records"])
        assert summarize(reported, old) == expected, (
            f"completed {in_flight} did not do what the policy plans"
        )
        state = reported
        tally.operations += 1
        in_flight = None

    snapshot = check_store(store, "after the kill")
    now = snapshot.records
    old = {r.kid for r in state}
    after_kill = summarize(now, old)
    published_before = {r.kid for r in state if r.published}
    published_now = {r.kid for r in now if r.published}
    if in_flight is None:
        assert after_kill == summarize(state, old), "the store changed with no operation in flight"
        tally.untouched_in_flight += 1
    else:
        plan = planned(state, in_flight)
        lost = published_before - published_now
        assert lost <= unpublished_by(plan), (
            f"published keys {sorted(lost)} left the JWKS, but {in_flight} may only remove "
            f"{sorted(unpublished_by(plan))}"
        )
        completed = summarize(applied(state, plan), old)
        assert after_kill in (summarize(state, old), completed), (
            f"killed during {in_flight}: the store is neither as before nor the whole operation"
        )
        unchanged = summarize(state, old)
        if after_kill == completed and completed != unchanged:
            tally.committed_in_flight += 1
        else:
            tally.untouched_in_flight += 1
            tally.interrupted += completed != unchanged
        tally.in_flight[in_flight["start"]] += 1
    if store.leftovers(now):
        tally.leftovers += 1
    return now


# -- processes ---------------------------------------------------------------------------------


class Zygote:
    """The forking parent of the workers (tests/chaos/key_worker.py)."""

    def __init__(self, process: subprocess.Popen[str], stderr: Path) -> None:
        self._process = process
        self._stderr = stderr
        self.running: int | None = None  # the worker forked and not yet reported ended

    def _read(self) -> dict[str, Any]:
        stdout = self._process.stdout
        assert stdout is not None
        line = stdout.readline()
        if not line:
            raise AssertionError(f"the worker zygote died: {self.errors()}")
        result: dict[str, Any] = json.loads(line)
        return result

    def fork(self, command: dict[str, object]) -> int:
        stdin = self._process.stdin
        assert stdin is not None
        stdin.write(json.dumps(command) + "\n")
        stdin.flush()
        pid: int = self._read()["pid"]
        self.running = pid
        return pid

    def ended(self, pid: int) -> dict[str, Any]:
        report = self._read()
        assert report["pid"] == pid
        self.running = None
        return report

    def errors(self) -> str:
        return self._stderr.read_text()


@contextmanager
def zygote(log: Path) -> Iterator[Zygote]:
    with log.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.chaos.key_worker"],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    running = Zygote(process, log)
    try:
        assert running._read() == {"ready": True}
        yield running
    finally:
        if running.running is not None:  # the test failed with a worker still looping
            with contextlib.suppress(ProcessLookupError):
                os.kill(running.running, signal.SIGKILL)
        if process.stdin is not None:
            process.stdin.close()
        try:
            process.wait(timeout=REPORT_TIMEOUT)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            if process.stdout is not None:
                process.stdout.close()


def run_trials(
    store: TrialStore, scratch: Path, rng: random.Random, kill_after: tuple[float, float]
) -> tuple[Tally, datetime]:
    """TRIALS workers on `store`, each SIGKILLed `kill_after` seconds (uniform) after its fork,
    every kill checked. Returns the tally and the simulated clock the last worker reached."""
    journals = scratch / "journals"
    journals.mkdir()
    store.apply(lambda records: plan_bootstrap(records, EPOCH, Algorithm.ES256))
    records = store.load().records
    clock = EPOCH
    tally = Tally()
    started = time.monotonic()
    with zygote(scratch / "zygote.err") as workers:
        for trial in range(TRIALS):
            journal = journals / f"{trial:03d}.jsonl"
            pid = workers.fork(
                {
                    "store": store.spec,
                    "journal": str(journal),
                    "seed": rng.randrange(2**32),
                    "start": clock.isoformat(),
                }
            )
            time.sleep(rng.uniform(*kill_after))
            os.kill(pid, signal.SIGKILL)
            report = workers.ended(pid)
            assert report["signal"] == signal.SIGKILL, (
                f"trial {trial}: the worker ended by itself ({report}): {workers.errors()}"
            )
            entries = read_journal(journal)
            store.settle()
            try:
                records = check_trial(store, records, entries, tally)
            except AssertionError as exc:
                raise AssertionError(f"trial {trial} ({journal.name}): {exc}") from exc
            tally.trials += 1
            starts = [e for e in entries if "start" in e]
            if starts:
                clock = datetime.fromisoformat(starts[-1]["at"])
    took = time.monotonic() - started
    print(f"\nSIGKILL trials on {store.spec['kind']} ({took:.1f} s): {tally.line()}")
    assert tally.trials == TRIALS
    # The kills must have landed on both sides of the commit point, and some inside a change,
    # or the trials proved less than they claim.
    assert tally.committed_in_flight > 0, tally.line()
    assert tally.interrupted > 0, tally.line()
    return tally, clock


def write_after_trials(store: TrialStore, clock: datetime, data_dir: Path) -> None:
    """The next write cleans up whatever the kills left; the real CLI reads the result. Prune
    first: the trials may have left the JWKS full, and a full JWKS refuses a rotation."""
    later = clock + POLICY.retire_for
    store.apply(lambda current: plan_prune(current, later, POLICY))
    records = store.apply(
        lambda current: plan_rotate(current, later, POLICY, Algorithm.ES256, force=True).plan
    ).records
    assert store.leftovers(records) == set()
    listed = subprocess.run(
        [WARRANT, "keys", "list"],
        env=store.cli_env(data_dir),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert listed.returncode == 0, listed.stderr
    assert [line.split()[2] for line in listed.stdout.splitlines()[1:]].count("active") == 1


def test_sigkill_at_random_points_of_rotations_and_writes(
    tmp_path: Path, chaos_rng: random.Random
) -> None:
    """A hundred and twenty workers looping forced rotations, maintenance, prunes and
    revocations on one file store, each SIGKILLed after a random 5-120 ms: after every kill the
    store loads with exactly one active key and a JWKS of its published keys, temp files and
    orphans are ignored, private keys are 0600, no published key left the JWKS unless the
    policy's plan for the operation in flight removes it, and the store shows either that
    operation whole or not at all."""
    store = FileTrialStore(tmp_path / "keys")
    tally, clock = run_trials(store, tmp_path, chaos_rng, KILL_AFTER)
    assert tally.leftovers > 0, tally.line()  # kills landed inside file writes
    write_after_trials(store, clock, tmp_path)


def test_sigkill_at_random_points_of_database_key_store_writes(
    tmp_path: Path, chaos_rng: random.Random, database_url: str
) -> None:
    """The same trials on the database key store (sealed keys) on SQLite and on the real
    PostgreSQL, each worker on its own engine like a replica: after every kill the store loads
    with exactly one active key and a JWKS of its published keys, a sealed private key is held
    for exactly the pending and active keys, the store shows the operation in flight whole or
    not at all, and the next worker takes the store's lock (a kill mid-transaction leaves none
    held)."""
    with DatabaseTrialStore(database_url) as store:
        store.migrate()
        _, clock = run_trials(store, tmp_path, chaos_rng, DATABASE_KILL_AFTER)
        write_after_trials(store, clock, tmp_path / "var")


def holds_write_lock(pid: int) -> bool:
    """Whether `pid` holds an exclusive flock (the key store's, during a change)."""
    with Path("/proc/locks").open() as locks:
        return any(
            fields[1] == "FLOCK" and fields[3] == "WRITE" and fields[4] == str(pid)
            for fields in (line.split() for line in locks)
            if len(fields) > 4
        )


def test_sigkill_of_warrant_keys_rotate_holding_the_lock(
    tmp_path: Path, chaos_rng: random.Random
) -> None:
    """The real `warrant keys rotate --force`, SIGKILLed at a random moment after it takes the
    store's lock (while it generates the RSA key and writes): the store loads with one active
    key, shows the rotation whole or not at all, and the CLI lists it afterwards."""
    rng = chaos_rng
    data = tmp_path / "var"
    directory = data / "keys"
    store = FileTrialStore(directory)
    store.apply(lambda records: plan_bootstrap(records, datetime.now(UTC), Algorithm.RS256))
    env = store.cli_env(data)
    killed = 0
    for trial in range(CLI_TRIALS):
        before = store.load().records
        old = {r.kid for r in before}
        with _cli(env, "keys", "rotate", "--force") as process:
            deadline = time.monotonic() + REPORT_TIMEOUT
            while process.poll() is None and not holds_write_lock(process.pid):
                assert time.monotonic() < deadline, "warrant keys rotate never took the lock"
                time.sleep(0.001)
            time.sleep(rng.uniform(*CLI_KILL_AFTER_LOCK))
            process.send_signal(signal.SIGKILL)
            code = process.wait(timeout=REPORT_TIMEOUT)
            assert process.stderr is not None
            errors = process.stderr.read().decode()
        killed += code == -signal.SIGKILL
        assert code in (0, -signal.SIGKILL), f"trial {trial}: exit {code}: {errors}"
        snapshot = check_store(store, f"CLI trial {trial}")
        now = datetime.now(UTC)
        plan = plan_rotate(before, now, POLICY, Algorithm.RS256, force=True).plan
        rotated = applied(before, plan)
        states = _states(snapshot.records, old)
        assert states in (_states(before, old), _states(rotated, old)), f"trial {trial}"
        if code == 0:
            assert states == _states(rotated, old), f"trial {trial}: exit 0 but not rotated"
    assert killed > 0, "no trial killed the CLI while it held the lock"
    listed = subprocess.run(
        [WARRANT, "keys", "list"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert listed.returncode == 0, listed.stderr


def _states(records: Sequence[KeyRecord], old: set[str]) -> tuple[Any, ...]:
    """States only (stamps come from the CLI's own clock)."""
    return (
        tuple(sorted((r.kid, r.state.value) for r in records if r.kid in old)),
        tuple(sorted(r.state.value for r in records if r.kid not in old)),
    )


@contextmanager
def _cli(env: dict[str, str], *args: str) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(
        [WARRANT, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        if process.stderr is not None:
            process.stderr.close()
