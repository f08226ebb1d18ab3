"""A zygote for the SIGKILL trials: imports the keys package once, then forks one worker per trial
that runs lifecycle operations on a key store in a tight loop until the test kills it.

    python -m tests.chaos.key_worker        (from the repository root)
    stdin:  one JSON object per trial: {"store", "journal", "seed", "start"}, where "store" is
            {"kind": "file", "path": directory} or {"kind": "database", "url": SQLAlchemy URL,
            "kek": base64 key-encryption key} (SqlKeyStore, sealed keys)
    stdout: {"pid": n} once the worker is forked, then {"pid": n, "signal": s, "exit": e}
            once it has ended (signal 9 is the expected end; an exit status means it failed)

Forking from a warm parent makes a trial cost milliseconds instead of an interpreter start, so a
hundred trials fit in seconds. Each worker appends to its journal, before every operation, a
`start` line naming the operation, its algorithm, its target and the clock it runs at, and after
it a `done` line with the records the store then holds. Lines are single os.write calls on an
O_APPEND file: a SIGKILL loses no line already written, though it may cut the last one short.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import sys
import traceback
from datetime import datetime, timedelta
from pathlib import Path

from issuer.db import create_engine
from issuer.key_store_sql import SqlKeyStore
from keys.errors import RotationRefused, UnknownKey
from keys.file_store import FileKeyStore
from keys.manager import KeyManager
from keys.model import Algorithm, KeyRecord, KeyState, RotationPolicy
from keys.protocols import KeyStore
from keys.sealed import KeyEncryptionKey, SealedCustodian

__all__ = ["OPERATIONS", "POLICY", "STEP", "encode_record", "open_store"]

POLICY = RotationPolicy()
# Simulated time per operation: retired keys expire (retire_for is 70 min) after a few
# operations, so prunes and maintenance really remove keys during the trials.
STEP = timedelta(minutes=20)
# Forced rotation dominates: it generates, transitions and deletes private keys in one write.
OPERATIONS = ("rotate", "rotate", "rotate", "maintain", "prune", "revoke", "bootstrap")
# RSA key generation takes tens of milliseconds, so some kills land inside it; P-256 is fast,
# so most operations are fsyncs.
RSA_SHARE = 0.2
# A killed worker still holds nothing: the kernel drops its flock. A live one never waits long.
LOCK_TIMEOUT = timedelta(seconds=30)
FAILED = 3  # the worker's exit status when an operation raised something unexpected


class _Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def encode_record(record: KeyRecord) -> dict[str, str | None]:
    def stamp(value: datetime | None) -> str | None:
        return None if value is None else value.isoformat()

    return {
        "kid": record.kid,
        "alg": record.alg.value,
        "state": record.state.value,
        "created_at": stamp(record.created_at),
        "activated_at": stamp(record.activated_at),
        "retired_at": stamp(record.retired_at),
        "revoked_at": stamp(record.revoked_at),
    }


def open_store(spec: dict[str, str]) -> KeyStore:
    """The store a trial's `store` object names, as the service would open it."""
    if spec["kind"] == "file":
        return FileKeyStore(Path(spec["path"]), lock_timeout=LOCK_TIMEOUT)
    custodian = SealedCustodian(KeyEncryptionKey(base64.b64decode(spec["kek"])))
    return SqlKeyStore(create_engine(spec["url"]), custodian, lock_timeout=LOCK_TIMEOUT)


def _journal(fd: int, entry: dict[str, object]) -> None:
    os.write(fd, (json.dumps(entry, separators=(",", ":")) + "\n").encode())


async def _work(spec: dict[str, str], fd: int, rng: random.Random, start: datetime) -> None:
    clock = _Clock(start)
    store = open_store(spec)
    managers = {alg: KeyManager(store, POLICY, alg, clock) for alg in Algorithm}
    records = (await store.load()).records
    while True:
        clock.now += STEP
        operation = rng.choice(OPERATIONS)
        alg = Algorithm.RS256 if rng.random() < RSA_SHARE else Algorithm.ES256
        target = None
        if operation == "revoke":
            candidates = sorted(r.kid for r in records if r.state is not KeyState.REVOKED)
            target = rng.choice(candidates) if candidates else None
        _journal(
            fd,
            {"start": operation, "at": clock.now.isoformat(), "alg": alg.value, "kid": target},
        )
        manager = managers[alg]
        outcome = "ok"
        try:
            if operation == "rotate":
                await manager.rotate(force=True)
            elif operation == "maintain":
                await manager.maintain()
            elif operation == "prune":
                await manager.prune()
            elif operation == "revoke" and target is not None:
                await manager.revoke(target)
            else:
                await manager.ensure_initialized()
        except (RotationRefused, UnknownKey) as refusal:
            outcome = f"refused: {refusal}"
        records = (await store.load()).records
        _journal(
            fd,
            {"done": operation, "outcome": outcome, "records": [encode_record(r) for r in records]},
        )


def _child(command: dict[str, object]) -> None:
    """Runs in the forked worker; never returns."""
    status = FAILED
    try:
        fd = os.open(
            str(command["journal"]), os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600
        )
        rng = random.Random(int(str(command["seed"])))  # noqa: S311 - seeded, not secret
        start = datetime.fromisoformat(str(command["start"]))
        store = command["store"]
        assert isinstance(store, dict)
        asyncio.run(_work(store, fd, rng, start))
    except BaseException:  # the worker only ends by SIGKILL: anything else is a finding
        traceback.print_exc(file=sys.stderr)
        sys.stderr.flush()
    os._exit(status)


def main() -> None:
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(command)
        print(json.dumps({"pid": pid}), flush=True)
        _, status = os.waitpid(pid, 0)
        signal = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
        code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
        print(json.dumps({"pid": pid, "signal": signal, "exit": code}), flush=True)


if __name__ == "__main__":
    main()
