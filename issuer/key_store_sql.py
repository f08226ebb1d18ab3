"""SqlKeyStore: the KeyStore in the shared database, so every replica signs with the same keys.

    signing_keys        one row per key: the record (kid, alg, state, timestamps, public JWK)
                        and where its private half lives, `custody`:
                          database  sealed_key + kek_id: the PKCS#8 key, AES-256-GCM under
                                    WARRANT_KEY_ENCRYPTION_KEY with the kid as associated
                                    data; set to NULL the moment the key can never sign again
                          kms       kms_key_id: the ARN of the AWS KMS key; the private half
                                    never leaves KMS
    signing_key_store   one row (id 1): `revision`, a random token replaced by every change,
                        which replicas poll every WARRANT_KEY_RELOAD_INTERVAL

`apply` is one transaction that first takes the store's exclusive lock:
    PostgreSQL  pg_advisory_xact_lock, waiting at most `lock_timeout`
    SQLite      the first statement is a write, so SQLite's single write lock is held (waiting
                up to the busy timeout) before anything is read
so two processes rotating at once run one after the other, and the second plans on what the
first committed: never two active keys. The custodian's side effects are ordered around the
commit: new keys are created before it (and given up if it never happens), a removed key's
private half is destroyed before it (so a failure keeps the record and a later prune retries),
and a retired KMS key is disabled after it (so an uncommitted retirement never disables the
key that still signs).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    Column,
    Integer,
    LargeBinary,
    Row,
    String,
    Table,
    Text,
    delete,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from issuer.db import Base, UtcDateTime
from keys.custody import Custodian, Custody, HeldKey, KmsHalf, PrivateHalf, SealedHalf, custody_of
from keys.errors import KeysError, KeyStoreCorrupt, KeyStoreLocked
from keys.manifest import MANIFEST_VERSION, ManifestError, decode_manifest
from keys.model import MAX_PUBLISHED_KEYS, KeyRecord, KeyState
from keys.protocols import KeySnapshot, Plan, Planner, Signer
from keys.transitions import SIGNING_STATES, apply_plan, check_invariants

__all__ = [
    "DEFAULT_LOCK_TIMEOUT",
    "EMPTY_REVISION",
    "KEYS_TABLE",
    "STATE_TABLE",
    "SqlKeyStore",
    "signing_key_store",
    "signing_keys",
]

log = logging.getLogger(__name__)

# A rotation holds the lock while it generates keys (RSA: ~100 ms; KMS: a few calls) and writes
# a few rows; ten seconds of waiting means the other process is stuck, not busy.
DEFAULT_LOCK_TIMEOUT = timedelta(seconds=10)
# The key store's PostgreSQL advisory lock: any fixed 64-bit number that no other Warrant lock
# uses ("WKeyStor" in ASCII). The migration lock and the maintenance lock use others.
STORE_LOCK_KEY = 0x574B_6579_5374_6F72
EMPTY_REVISION = "empty"
KEYS_TABLE = "signing_keys"
STATE_TABLE = "signing_key_store"
_WHERE = f"database table {KEYS_TABLE}"
_LOCK_NOT_AVAILABLE = "55P03"  # PostgreSQL's SQLSTATE when lock_timeout expires

signing_keys = Table(
    KEYS_TABLE,
    Base.metadata,
    Column("kid", String(43), primary_key=True),  # RFC 7638 thumbprint, base64url SHA-256
    Column("alg", String(8), nullable=False),
    Column("state", String(16), nullable=False),
    Column("custody", String(16), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("activated_at", UtcDateTime(), nullable=True),
    Column("retired_at", UtcDateTime(), nullable=True),
    Column("revoked_at", UtcDateTime(), nullable=True),
    Column("public_jwk", Text(), nullable=False),
    Column("sealed_key", LargeBinary(), nullable=True),
    Column("kek_id", String(32), nullable=True),
    Column("kms_key_id", String(2048), nullable=True),
    CheckConstraint("custody IN ('database', 'kms')", name="ck_signing_keys_custody"),
    CheckConstraint(
        "(custody = 'database' AND kms_key_id IS NULL) OR "
        "(custody = 'kms' AND kms_key_id IS NOT NULL AND sealed_key IS NULL)",
        name="ck_signing_keys_private_half",
    ),
    CheckConstraint(
        "(sealed_key IS NULL AND kek_id IS NULL) OR "
        "(sealed_key IS NOT NULL AND kek_id IS NOT NULL)",
        name="ck_signing_keys_sealed_with",
    ),
)

signing_key_store = Table(
    STATE_TABLE,
    Base.metadata,
    Column("id", Integer(), primary_key=True, autoincrement=False),
    Column("revision", String(64), nullable=False),
    CheckConstraint("id = 1", name="ck_signing_key_store_one_row"),
)


@dataclass(frozen=True, slots=True)
class _Stored:
    """What the tables hold at one revision: the records and each key's private half."""

    revision: str
    records: tuple[KeyRecord, ...]
    halves: Mapping[str, PrivateHalf | None]


class SqlKeyStore:
    """A KeyStore on the shared SQL database. New keys go to `custodian`; keys held by another
    custody (say, sealed keys left from before a move to KMS) are read through `readers`."""

    def __init__(
        self,
        engine: AsyncEngine,
        custodian: Custodian,
        *,
        readers: Sequence[Custodian] = (),
        max_published: int = MAX_PUBLISHED_KEYS,
        lock_timeout: timedelta = DEFAULT_LOCK_TIMEOUT,
    ) -> None:
        if engine.dialect.name not in {"postgresql", "sqlite"}:
            raise KeysError(f"the key store needs PostgreSQL or SQLite, not {engine.dialect.name}")
        self._engine = engine
        self._custodian = custodian
        self._custodians: dict[Custody, Custodian] = {c.custody: c for c in readers}
        self._custodians[custodian.custody] = custodian
        self._max_published = max_published
        self._lock_timeout = lock_timeout
        # Signers by kid with the private half they came from: a reload parses only what changed
        # (parsing an RSA key costs ~35 ms).
        self._signers: dict[str, tuple[PrivateHalf, Signer]] = {}
        self._signers_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SqlKeyStore(custody={self._custodian.custody.value!r})"

    async def revision(self) -> str:
        with self._database_errors("read"):
            async with self._engine.connect() as conn:
                return await _revision(conn)

    async def load(self) -> KeySnapshot:
        with self._database_errors("read"):
            async with self._engine.connect() as conn:
                stored = await _read(conn)
        return await asyncio.to_thread(self._snapshot, stored)

    async def apply(self, planner: Planner) -> KeySnapshot:
        retiring: list[tuple[str, PrivateHalf]] = []
        with self._database_errors("write"):
            async with self._engine.connect() as conn:
                await self._lock(conn)
                stored = await _read(conn)
                plan = planner(stored.records)
                if plan.empty:
                    await conn.rollback()
                    return await asyncio.to_thread(self._snapshot, stored)
                retiring = await self._commit(conn, stored, plan)
        for kid, half in retiring:
            try:
                await self._custodian_for(kid, half).retire(kid, half)
            except KeysError as exc:
                # Committed already: the key never signs through Warrant again. Say so loudly.
                log.error("key %s was retired but its private half was not disabled: %s", kid, exc)
        return await self.load()

    async def aclose(self) -> None:
        for custodian in self._custodians.values():
            await custodian.aclose()

    # Writing.

    async def _commit(
        self, conn: AsyncConnection, stored: _Stored, plan: Plan
    ) -> list[tuple[str, PrivateHalf]]:
        """Create, check, destroy, write and commit; return the keys to retire afterwards."""
        created: list[HeldKey] = []
        committing = False
        try:
            for new in plan.generate:
                created.append(await self._custodian.create(new.alg))
            generated = [
                _record(held, new.state, plan.now)
                for held, new in zip(created, plan.generate, strict=True)
            ]
            records = apply_plan(stored.records, plan, generated)
            check_invariants(records, self._max_published)
            for kid in plan.remove:
                half = stored.halves.get(kid)
                if half is not None:
                    await self._custodian_for(kid, half).destroy(kid, half)
            await self._write(conn, stored, plan, records, created)
            committing = True
            await conn.commit()
        except BaseException:
            if not committing:
                await self._give_up(created)
            else:
                log.error(
                    "the key store commit failed; if it was applied after all, keys %s exist "
                    "in %s custody, else they are orphans",
                    [h.kid for h in created],
                    self._custodian.custody.value,
                )
            raise
        return [
            (kid, half)
            for kid, target in plan.transitions.items()
            if target not in SIGNING_STATES
            and _state(stored, kid) in SIGNING_STATES
            and (half := stored.halves.get(kid)) is not None
            and not half.holds_key_material
        ]

    async def _write(
        self,
        conn: AsyncConnection,
        stored: _Stored,
        plan: Plan,
        records: Sequence[KeyRecord],
        created: Sequence[HeldKey],
    ) -> None:
        if plan.remove:
            await conn.execute(delete(signing_keys).where(signing_keys.c.kid.in_(plan.remove)))
        after = {r.kid: r for r in records}
        for kid, target in plan.transitions.items():
            record = after[kid]
            values: dict[str, Any] = {
                "state": record.state.value,
                "activated_at": record.activated_at,
                "retired_at": record.retired_at,
                "revoked_at": record.revoked_at,
            }
            half = stored.halves.get(kid)
            if target not in SIGNING_STATES and half is not None and half.holds_key_material:
                # It will never sign again: its private key goes now, as the file store's does.
                values.update(sealed_key=None, kek_id=None)
            await conn.execute(update(signing_keys).where(signing_keys.c.kid == kid).values(values))
        for held in created:
            await conn.execute(insert(signing_keys).values(_row(after[held.kid], held.half)))
        revision = uuid.uuid4().hex
        await conn.execute(
            _upsert(conn, revision=revision).on_conflict_do_update(
                index_elements=["id"], set_={"revision": revision}
            )
        )

    async def _give_up(self, created: Sequence[HeldKey]) -> None:
        for held in created:
            try:
                await self._custodian.destroy(held.kid, held.half)
            except KeysError as exc:
                log.error("key %s was created but not recorded; %s", held.kid, exc)

    async def _lock(self, conn: AsyncConnection) -> None:
        if conn.dialect.name == "postgresql":
            milliseconds = int(self._lock_timeout.total_seconds() * 1000)
            await conn.execute(text(f"SET LOCAL lock_timeout = {milliseconds}"))
            await conn.execute(select(func.pg_advisory_xact_lock(STORE_LOCK_KEY)))
            return
        # SQLite: a write as the first statement takes the database's write lock before any read
        # (the driver opens the transaction at the first write, not at a SELECT).
        await conn.execute(_upsert(conn, revision=EMPTY_REVISION).on_conflict_do_nothing())

    # Reading.

    def _snapshot(self, stored: _Stored) -> KeySnapshot:
        signers: dict[str, Signer] = {}
        for record in stored.records:
            if record.state in SIGNING_STATES:
                half = stored.halves.get(record.kid)
                if half is None:
                    raise KeyStoreCorrupt(
                        f"{_WHERE} row {record.kid}",
                        f"the {record.state.value} key has no private key",
                    )
                signers[record.kid] = self._signer(record, half)
        with self._signers_lock:
            # Forget keys that will never sign again.
            for kid in self._signers.keys() - signers.keys():
                del self._signers[kid]
        return KeySnapshot(
            records=stored.records, signers=MappingProxyType(signers), revision=stored.revision
        )

    def _signer(self, record: KeyRecord, half: PrivateHalf) -> Signer:
        with self._signers_lock:
            cached = self._signers.get(record.kid)
        if cached is not None and cached[0] == half:
            return cached[1]
        custodian = self._custodian_for(record.kid, half)
        try:
            signer = custodian.signer(record, half)
        except KeysError as exc:
            raise KeyStoreCorrupt(f"{_WHERE} row {record.kid}", str(exc)) from None
        with self._signers_lock:
            self._signers[record.kid] = (half, signer)
        return signer

    def _custodian_for(self, kid: str, half: PrivateHalf) -> Custodian:
        custody = custody_of(half)
        custodian = self._custodians.get(custody)
        if custodian is None:
            setting = (
                "WARRANT_KEY_ENCRYPTION_KEY"
                if custody is Custody.DATABASE
                else "WARRANT_KEY_STORE=kms and WARRANT_KMS_REGION"
            )
            raise KeysError(
                f"key {kid} is held in {custody.value} custody, which this Warrant is not "
                f"configured to use: set {setting}"
            )
        return custodian

    @contextlib.contextmanager
    def _database_errors(self, action: str) -> Iterator[None]:
        """Database failures as KeysError (the keys package's callers handle those), naming
        no parameter: a failed statement's parameters may include a sealed key."""
        try:
            yield
        except DBAPIError as exc:
            if getattr(exc.orig, "sqlstate", None) == _LOCK_NOT_AVAILABLE or (
                "database is locked" in str(exc.orig)
            ):
                raise KeyStoreLocked(
                    f"key store {_WHERE}: another process held its lock too long (PostgreSQL "
                    f"waits {int(self._lock_timeout.total_seconds())} s, SQLite its busy "
                    "timeout); retry, or find the stuck process"
                ) from exc
            raise _database_error(action, exc) from exc
        except (SQLAlchemyError, OSError, TimeoutError) as exc:
            raise _database_error(action, exc) from exc


def _database_error(action: str, exc: BaseException) -> KeysError:
    cause = getattr(exc, "orig", None) or exc
    reason = str(cause)
    if "no such table" in reason or "does not exist" in reason:
        return KeysError(
            f"key store {_WHERE}: the key tables are missing; run 'warrant db upgrade' (the "
            "service does it at start)"
        )
    return KeysError(
        f"key store {_WHERE}: cannot {action} it: database error {type(cause).__name__}; check "
        "WARRANT_DATABASE_URL and that the database is reachable"
    )


def _upsert(conn: AsyncConnection, *, revision: str) -> Any:
    """INSERT of the state row, in the dialect's form that takes ON CONFLICT."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(signing_key_store).values(id=1, revision=revision)


async def _revision(conn: AsyncConnection) -> str:
    value = await conn.scalar(
        select(signing_key_store.c.revision).where(signing_key_store.c.id == 1)
    )
    return value or EMPTY_REVISION


async def _read(conn: AsyncConnection) -> _Stored:
    # The revision first: should a change commit between the two reads, the snapshot pairs new
    # rows with the old revision and the next poll reloads; never old rows with a new revision.
    revision = await _revision(conn)
    rows = (
        await conn.execute(
            select(signing_keys).order_by(signing_keys.c.created_at, signing_keys.c.kid)
        )
    ).all()
    records = _decode(rows)
    return _Stored(revision, records, {row.kid: _half(row) for row in rows})


def _decode(rows: Sequence[Row[Any]]) -> tuple[KeyRecord, ...]:
    """Records from rows, checked as strictly as the file store's manifest (kid = thumbprint of
    the public JWK, only public members, stamps for each state, exactly one active key)."""
    entries = []
    for row in rows:
        try:
            jwk = json.loads(row.public_jwk)
        except json.JSONDecodeError:
            raise KeyStoreCorrupt(f"{_WHERE} row {row.kid}", "public_jwk is not JSON") from None
        entries.append(
            {
                "kid": row.kid,
                "alg": row.alg,
                "state": row.state,
                "created_at": _iso(row.created_at),
                "activated_at": _iso(row.activated_at),
                "retired_at": _iso(row.retired_at),
                "revoked_at": _iso(row.revoked_at),
                "public_jwk": jwk,
            }
        )
    document = json.dumps({"version": MANIFEST_VERSION, "keys": entries}).encode()
    try:
        return decode_manifest(document)
    except ManifestError as exc:
        raise KeyStoreCorrupt(_WHERE, str(exc)) from None


def _half(row: Row[Any]) -> PrivateHalf | None:
    if row.custody == Custody.KMS.value and row.kms_key_id:
        return KmsHalf(key_id=row.kms_key_id)
    if row.custody == Custody.DATABASE.value:
        if row.sealed_key is None:
            return None
        return SealedHalf(blob=bytes(row.sealed_key), kek_id=row.kek_id or "")
    raise KeyStoreCorrupt(
        f"{_WHERE} row {row.kid}", f"custody {row.custody!r} is not database or kms"
    )


def _record(held: HeldKey, state: KeyState, now: datetime) -> KeyRecord:
    return KeyRecord(
        kid=held.kid,
        alg=held.alg,
        state=state,
        created_at=now,
        public_jwk=dict(held.public_jwk),
        activated_at=now if state is KeyState.ACTIVE else None,
    )


def _row(record: KeyRecord, half: PrivateHalf) -> dict[str, Any]:
    return {
        "kid": record.kid,
        "alg": record.alg.value,
        "state": record.state.value,
        "custody": custody_of(half).value,
        "created_at": record.created_at,
        "activated_at": record.activated_at,
        "retired_at": record.retired_at,
        "revoked_at": record.revoked_at,
        "public_jwk": json.dumps(dict(record.public_jwk), sort_keys=True),
        "sealed_key": half.blob if isinstance(half, SealedHalf) else None,
        "kek_id": half.kek_id if isinstance(half, SealedHalf) else None,
        "kms_key_id": half.key_id if isinstance(half, KmsHalf) else None,
    }


def _state(stored: _Stored, kid: str) -> KeyState | None:
    return next((r.state for r in stored.records if r.kid == kid), None)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat()
