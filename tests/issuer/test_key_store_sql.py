"""SqlKeyStore on SQLite and the real PostgreSQL: keys shared by every store on the database,
private keys encrypted at rest, a wrong KEK or an altered row refused by name, revisions,
rotations from two processes at once, the KMS store's lifecycle against moto, the maintenance
lock, and the key-store settings."""

from __future__ import annotations

import asyncio
import base64
import json
import multiprocessing
import re
import time
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jwt
import pytest
from aiobotocore.session import AioSession
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from issuer.db import create_engine
from issuer.errors import ConfigError
from issuer.key_store_sql import (
    EMPTY_REVISION,
    STORE_LOCK_KEY,
    SqlKeyStore,
    signing_keys,
)
from issuer.key_stores import OneShotKeyStore, build_key_store, maintenance_turn
from issuer.runtime import IssuerRuntime
from issuer.settings import KeyStoreKind, Settings
from keys.errors import KeysError, KeyStoreCorrupt, KeyStoreLocked
from keys.file_store import FileKeyStore
from keys.kms_custody import KmsConnection, KmsCustodian
from keys.manager import KeyManager
from keys.model import Algorithm, KeyRecord, KeyState, RotationPolicy
from keys.protocols import KeySnapshot, NewKey, Plan
from keys.sealed import KeyEncryptionKey, SealedCustodian
from tests.conftest import issuer_env
from tests.issuer.conftest import Clock

if TYPE_CHECKING:
    from multiprocessing.queues import Queue
    from multiprocessing.synchronize import Barrier

    from types_aiobotocore_kms import KMSClient

KEK_BYTES = bytes(range(32))
OTHER_KEK_BYTES = bytes(range(32, 64))
KEK_B64 = base64.b64encode(KEK_BYTES).decode()
OTHER_KEK_B64 = base64.b64encode(OTHER_KEK_BYTES).decode()
REGION = "us-east-1"
POLICY = RotationPolicy()
# Long enough that a second process reaches the lock while the first still plans: without the
# lock both would plan on the same rows.
PLANNER_PAUSE = 0.5


def sealed_store(engine: AsyncEngine, kek: bytes = KEK_BYTES) -> SqlKeyStore:
    return SqlKeyStore(engine, SealedCustodian(KeyEncryptionKey(kek)))


def manager(store: SqlKeyStore, clock: Clock, alg: Algorithm = Algorithm.ES256) -> KeyManager:
    return KeyManager(store, POLICY, alg, clock)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


async def signed_token(snapshot: KeySnapshot) -> str:
    active = snapshot.active()
    assert active is not None
    signer = snapshot.signers[active.kid]
    header = b64url(json.dumps({"alg": signer.alg.value, "kid": signer.kid}).encode())
    payload = b64url(json.dumps({"sub": "tenant:acme"}).encode())
    signature = await signer.sign(f"{header}.{payload}".encode())
    return f"{header}.{payload}.{b64url(signature)}"


def verify(token: str, records: Sequence[KeyRecord]) -> dict[str, Any]:
    """PyJWT, against the published JWK of the token's kid."""
    kid = jwt.get_unverified_header(token)["kid"]
    jwk = next(dict(r.public_jwk) for r in records if r.kid == kid and r.published)
    claims: dict[str, Any] = jwt.decode(token, jwt.PyJWK(jwk), algorithms=["RS256", "ES256"])
    return claims


async def raw_rows(engine: AsyncEngine) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        result = await conn.execute(select(signing_keys).order_by(signing_keys.c.kid))
        return [dict(row._mapping) for row in result]


async def set_column(engine: AsyncEngine, kid: str, **values: object) -> None:
    async with engine.begin() as conn:
        await conn.execute(update(signing_keys).where(signing_keys.c.kid == kid).values(values))


# The database store.


@pytest.mark.parametrize("alg", list(Algorithm))
async def test_every_store_on_the_database_shares_the_keys(
    engine: AsyncEngine, database_url: str, clock: Clock, alg: Algorithm
) -> None:
    """A second store on its own engine (another replica) loads the same records and signs with
    the same active key: its tokens verify against the first store's published JWKs."""
    first = await manager(sealed_store(engine), clock, alg).ensure_initialized()
    assert [r.state for r in first.records].count(KeyState.ACTIVE) == 1
    assert len(first.published()) == 2
    replica_engine = create_engine(database_url)
    try:
        second = await sealed_store(replica_engine).load()
        assert second.records == first.records
        assert second.revision == first.revision
        assert verify(await signed_token(second), first.records)["sub"] == "tenant:acme"
    finally:
        await replica_engine.dispose()


@pytest.mark.parametrize("alg", list(Algorithm))
async def test_private_keys_are_encrypted_at_rest(
    engine: AsyncEngine, clock: Clock, alg: Algorithm
) -> None:
    """No column of any row holds a PEM, the KEK, or a private number of the key; the sealed
    blob opens (AES-256-GCM, kid as associated data) to the key whose thumbprint is the kid."""
    await manager(sealed_store(engine), clock, alg).ensure_initialized()
    rows = await raw_rows(engine)
    assert len(rows) == 2
    kek = KeyEncryptionKey(KEK_BYTES)
    for row in rows:
        stored = b"".join(
            value if isinstance(value, bytes) else str(value).encode() for value in row.values()
        )
        for forbidden in (b"PRIVATE KEY", b"-----BEGIN", KEK_BYTES, KEK_B64.encode()):
            assert forbidden not in stored
        assert set(json.loads(row["public_jwk"])) <= {"kty", "kid", "use", "alg", "n", "e"} | {
            "crv",
            "x",
            "y",
        }
        assert (row["custody"], row["kek_id"], row["kms_key_id"]) == ("database", kek.id, None)
        blob = row["sealed_key"]
        assert blob[:1] == b"\x01"
        # Opened here with the documented format, independently of the store.
        pem = AESGCM(KEK_BYTES).decrypt(blob[1:13], blob[13:], row["kid"].encode())
        key = load_pem_private_key(pem, password=None)
        numbers: list[int]
        if isinstance(key, rsa.RSAPrivateKey):
            private = key.private_numbers()
            numbers = [private.d, private.p, private.q]
        else:
            assert isinstance(key, ec.EllipticCurvePrivateKey)
            numbers = [key.private_numbers().private_value]
        for number in numbers:
            assert number.to_bytes((number.bit_length() + 7) // 8, "big") not in stored
            assert str(number).encode() not in stored


async def test_a_retired_key_loses_its_private_key(engine: AsyncEngine, clock: Clock) -> None:
    """Rotation drops the sealed private key of the key it retires in the same transaction;
    pending and active keys keep theirs."""
    keys = manager(sealed_store(engine), clock)
    await keys.ensure_initialized()
    outcome = await keys.rotate(force=True)
    by_kid = {row["kid"]: row for row in await raw_rows(engine)}
    retired = by_kid[outcome.retired_kid]
    assert (retired["state"], retired["sealed_key"], retired["kek_id"]) == ("retired", None, None)
    for row in by_kid.values():
        if row["state"] in {"active", "pending"}:
            assert row["sealed_key"] is not None


async def test_a_wrong_kek_is_named_and_nothing_is_regenerated(
    engine: AsyncEngine, clock: Clock
) -> None:
    """With another WARRANT_KEY_ENCRYPTION_KEY the store refuses to load, naming both KEK ids
    (never the keys); starting up does not replace the keys it cannot open."""
    await manager(sealed_store(engine), clock).ensure_initialized()
    before = await raw_rows(engine)
    wrong = sealed_store(engine, OTHER_KEK_BYTES)
    with pytest.raises(KeyStoreCorrupt) as caught:
        await wrong.load()
    message = str(caught.value)
    right_id, wrong_id = KeyEncryptionKey(KEK_BYTES).id, KeyEncryptionKey(OTHER_KEK_BYTES).id
    assert f"sealed with key-encryption key id {right_id}" in message
    assert f"WARRANT_KEY_ENCRYPTION_KEY has id {wrong_id}" in message
    for secret in (KEK_B64, OTHER_KEK_B64):
        assert secret not in message
    with pytest.raises(KeyStoreCorrupt):
        await manager(wrong, clock).ensure_initialized()
    assert await raw_rows(engine) == before


def _flip_last_byte(rows: dict[str, dict[str, Any]], active: str, pending: str) -> dict[str, Any]:
    blob = bytearray(rows[active]["sealed_key"])
    blob[-1] ^= 1
    return {active: {"sealed_key": bytes(blob)}}


def _swap_blobs(rows: dict[str, dict[str, Any]], active: str, pending: str) -> dict[str, Any]:
    return {
        active: {"sealed_key": rows[pending]["sealed_key"]},
        pending: {"sealed_key": rows[active]["sealed_key"]},
    }


def _other_public_key(rows: dict[str, dict[str, Any]], active: str, pending: str) -> dict[str, Any]:
    jwk = json.loads(rows[pending]["public_jwk"])
    jwk["kid"] = active
    return {active: {"public_jwk": json.dumps(jwk)}}


@pytest.mark.parametrize(
    ("tamper", "problem"),
    [
        (_flip_last_byte, "fails its integrity check"),
        (_swap_blobs, "fails its integrity check"),
        (_other_public_key, "kid is not the RFC 7638 thumbprint of its public_jwk"),
    ],
)
async def test_an_altered_row_is_refused_by_name(
    engine: AsyncEngine, clock: Clock, tamper: Any, problem: str
) -> None:
    """A flipped ciphertext byte, a sealed key moved to another kid's row, or a public key that
    is not the kid's: each is KeyStoreCorrupt naming the table and the problem."""
    snapshot = await manager(sealed_store(engine), clock).ensure_initialized()
    active = snapshot.active()
    assert active is not None
    pending = next(r.kid for r in snapshot.records if r.state is KeyState.PENDING)
    rows = {row["kid"]: row for row in await raw_rows(engine)}
    for kid, values in tamper(rows, active.kid, pending).items():
        await set_column(engine, kid, **values)
    with pytest.raises(KeyStoreCorrupt, match=problem) as caught:
        await sealed_store(engine).load()
    assert "key store database table signing_keys" in str(caught.value)


async def test_the_revision_moves_on_every_change_and_only_then(
    engine: AsyncEngine, database_url: str, clock: Clock
) -> None:
    """An empty store has the empty revision; each applied change gives a new one, which a
    replica polling `revision()` sees; a change that plans nothing leaves it alone."""
    store = sealed_store(engine)
    keys = manager(store, clock)
    assert await store.revision() == EMPTY_REVISION
    first = (await keys.ensure_initialized()).revision
    assert first != EMPTY_REVISION
    assert await store.revision() == first
    assert (await keys.ensure_initialized()).revision == first  # nothing to do
    assert await store.revision() == first
    await keys.rotate(force=True)
    second = await store.revision()
    assert second not in {first, EMPTY_REVISION}
    replica_engine = create_engine(database_url)
    try:
        replica = sealed_store(replica_engine)
        assert await replica.revision() == second
        await manager(replica, clock).revoke(next(iter((await replica.load()).signers)))
        assert await store.revision() not in {first, second}
    finally:
        await replica_engine.dispose()


# Two processes at once.


def _replace_active(records: Sequence[KeyRecord]) -> Plan:
    """Retire the active key and make a brand-new key active: run twice on the same rows, this
    would leave two active keys."""
    time.sleep(PLANNER_PAUSE)
    active = next(r for r in records if r.state is KeyState.ACTIVE)
    return Plan(
        now=datetime.now(UTC),
        generate=(NewKey(Algorithm.ES256, KeyState.ACTIVE),),
        transitions={active.kid: KeyState.RETIRED},
    )


def replace_active_worker(url: str, barrier: Barrier, results: Queue[str]) -> None:
    """One process: connect, wait for the other, then replace the active key."""
    results.put(asyncio.run(_replace_active_in(url, barrier)))


async def _replace_active_in(url: str, barrier: Barrier) -> str:
    engine = create_engine(url)
    try:
        store = sealed_store(engine)
        await store.revision()  # connected, so the two race for the lock, not for a connection
        barrier.wait(timeout=60)
        active = (await store.apply(_replace_active)).active()
        assert active is not None
        return active.kid
    finally:
        await engine.dispose()


@pytest.mark.slow
async def test_two_processes_rotating_at_once_leave_one_active_key(
    engine: AsyncEngine, database_url: str, clock: Clock
) -> None:
    """Two processes replace the active key at the same moment: the store's lock runs them one
    after the other, so the second retires the key the first made, and exactly one is active."""
    initial = await manager(sealed_store(engine), clock).ensure_initialized()
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    results: Queue[str] = context.Queue()
    workers = [
        context.Process(target=replace_active_worker, args=(database_url, barrier, results))
        for _ in range(2)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        await asyncio.to_thread(worker.join, 120)
    assert [w.exitcode for w in workers] == [0, 0]
    made = {results.get(timeout=5), results.get(timeout=5)}
    snapshot = await sealed_store(engine).load()
    states = {r.kid: r.state for r in snapshot.records}
    assert list(states.values()).count(KeyState.ACTIVE) == 1
    assert len(states) == len(initial.records) + 2
    assert len(made) == 2  # each saw a different active key when it committed
    active = snapshot.active()
    assert active is not None
    assert active.kid in made
    assert {states[kid] for kid in made} == {KeyState.ACTIVE, KeyState.RETIRED}


async def test_a_lock_held_too_long_is_reported(
    engine: AsyncEngine, database_url: str, clock: Clock
) -> None:
    """On PostgreSQL a store that cannot take the lock within its timeout raises KeyStoreLocked
    instead of waiting forever."""
    if not database_url.startswith("postgresql"):
        pytest.skip("the advisory lock is PostgreSQL's; SQLite waits its busy timeout")
    waiter_engine = create_engine(database_url)
    try:
        async with engine.connect() as holder:
            await holder.execute(select(func.pg_advisory_xact_lock(STORE_LOCK_KEY)))
            store = SqlKeyStore(
                waiter_engine,
                SealedCustodian(KeyEncryptionKey(KEK_BYTES)),
                lock_timeout=timedelta(milliseconds=300),
            )
            with pytest.raises(KeyStoreLocked, match="another process held its lock too long"):
                await manager(store, clock).ensure_initialized()
    finally:
        await waiter_engine.dispose()


# The KMS store.


@pytest.fixture
def aws_session() -> AioSession:
    session = AioSession()
    session.set_credentials("AKIAKMSTEST000000000", "kms-test-secret")
    return session


@pytest.fixture
async def kms(moto_url: str, aws_session: AioSession) -> AsyncIterator[KMSClient]:
    async with aws_session.create_client(
        "kms", region_name=REGION, endpoint_url=moto_url
    ) as client:
        yield client


@pytest.fixture
async def kms_store(
    engine: AsyncEngine, moto_url: str, aws_session: AioSession
) -> AsyncIterator[SqlKeyStore]:
    connection = KmsConnection(region=REGION, endpoint_url=moto_url, session=aws_session)
    store = SqlKeyStore(engine, KmsCustodian(connection))
    yield store
    await store.aclose()


async def key_state(kms: KMSClient, key_id: str) -> str:
    return (await kms.describe_key(KeyId=key_id))["KeyMetadata"]["KeyState"]


async def test_kms_store_lifecycle(
    engine: AsyncEngine, kms_store: SqlKeyStore, kms: KMSClient, clock: Clock
) -> None:
    """Keys live in KMS and only their ARNs in the database; tokens verify with PyJWT;
    scheduled rotation promotes the pending key and disables the retired one in KMS; pruning
    removes its record and schedules its KMS key's deletion."""
    keys = manager(kms_store, clock, Algorithm.RS256)
    first = await keys.ensure_initialized()
    rows = {row["kid"]: row for row in await raw_rows(engine)}
    assert {row["custody"] for row in rows.values()} == {"kms"}
    assert all(row["sealed_key"] is None and row["kek_id"] is None for row in rows.values())
    arns = {kid: row["kms_key_id"] for kid, row in rows.items()}
    assert all(arn.startswith(f"arn:aws:kms:{REGION}:") for arn in arns.values())
    assert verify(await signed_token(first), first.records)["sub"] == "tenant:acme"
    old = first.active()
    assert old is not None

    clock.advance(POLICY.rotation_period)
    rotated = await keys.maintain()
    new = rotated.active()
    assert new is not None
    assert new.kid != old.kid
    assert {r.kid: r.state for r in rotated.records}[old.kid] is KeyState.RETIRED
    assert await key_state(kms, arns[old.kid]) == "Disabled"
    assert await key_state(kms, arns[new.kid]) == "Enabled"
    assert verify(await signed_token(rotated), rotated.records)["sub"] == "tenant:acme"

    clock.advance(POLICY.retire_for)
    assert await keys.prune() == [old.kid]
    assert old.kid not in {row["kid"] for row in await raw_rows(engine)}
    metadata = (await kms.describe_key(KeyId=arns[old.kid]))["KeyMetadata"]
    assert metadata["KeyState"] == "PendingDeletion"


async def test_kms_keys_of_a_change_that_is_not_written_are_deleted(
    kms_store: SqlKeyStore, kms: KMSClient, clock: Clock
) -> None:
    """When a plan fails its checks after KMS created its keys (here: a second active key), the
    change is not written and the new KMS key is scheduled for deletion, not orphaned."""
    await manager(kms_store, clock).ensure_initialized()
    before = {k["KeyArn"] for k in (await kms.list_keys())["Keys"]}

    def second_active(records: Sequence[KeyRecord]) -> Plan:
        return Plan(now=clock(), generate=(NewKey(Algorithm.ES256, KeyState.ACTIVE),))

    with pytest.raises(KeysError, match="2 active keys"):
        await kms_store.apply(second_active)
    created = {k["KeyArn"] for k in (await kms.list_keys())["Keys"]} - before
    assert len(created) == 1
    assert await key_state(kms, created.pop()) == "PendingDeletion"
    assert len((await kms_store.load()).records) == 2


async def test_moving_from_database_to_kms_custody(
    engine: AsyncEngine,
    moto_url: str,
    aws_session: AioSession,
    clock: Clock,
) -> None:
    """A KMS store that can still read sealed keys keeps signing with the sealed active key
    and rotates to KMS keys; without the KEK it names the setting it lacks."""
    await manager(sealed_store(engine), clock).ensure_initialized()
    connection = KmsConnection(region=REGION, endpoint_url=moto_url, session=aws_session)
    sealed = SealedCustodian(KeyEncryptionKey(KEK_BYTES))
    store = SqlKeyStore(engine, KmsCustodian(connection), readers=[sealed])
    try:
        keys = manager(store, clock)
        snapshot = await store.load()
        assert verify(await signed_token(snapshot), snapshot.records)
        await keys.rotate(force=True)
        custody = {row["state"]: row["custody"] for row in await raw_rows(engine)}
        assert custody["active"] == "database"  # the old pending key, promoted
        assert custody["pending"] == "kms"
        without_kek = SqlKeyStore(engine, KmsCustodian(connection))
        with pytest.raises(KeysError, match="set WARRANT_KEY_ENCRYPTION_KEY"):
            await without_kek.load()
    finally:
        await store.aclose()


# The maintenance lock.


async def test_maintenance_runs_on_one_replica_at_a_time(database_url: str) -> None:
    """With keys in a shared PostgreSQL database, a second replica skips maintenance while the
    first holds the lock, and gets it once released; SQLite and the file store always run."""
    first, second = create_engine(database_url), create_engine(database_url)
    try:
        async with maintenance_turn(first, False) as mine:
            assert mine
        if not database_url.startswith("postgresql"):
            async with maintenance_turn(first, True) as a, maintenance_turn(second, True) as b:
                assert (a, b) == (True, True)
            return
        async with maintenance_turn(first, True) as a:
            assert a
            async with maintenance_turn(second, True) as b:
                assert not b
        async with maintenance_turn(second, True) as b:
            assert b
    finally:
        await first.dispose()
        await second.dispose()


async def test_the_service_rotates_on_schedule_only_with_the_maintenance_lock(
    data_dir: Path, database_url: str, clock: Clock
) -> None:
    """A running service on the database store rotates when the active key is due; on
    PostgreSQL, while another replica holds the maintenance lock, it leaves the keys alone."""
    settings = Settings.from_env(
        issuer_env(
            data_dir,
            WARRANT_DATABASE_URL=database_url,
            WARRANT_KEY_STORE="database",
            WARRANT_KEY_ENCRYPTION_KEY=KEK_B64,
        )
    )
    runtime = await IssuerRuntime.open(settings, clock)
    other = create_engine(database_url)
    try:
        first = runtime.keyring.snapshot.active()
        assert first is not None
        clock.advance(settings.policy.rotation_period)
        if database_url.startswith("postgresql"):
            async with maintenance_turn(other, True) as held:
                assert held
                await runtime.maintain_keys()
            assert runtime.keyring.snapshot.active() == first
        await runtime.maintain_keys()
        rotated = runtime.keyring.snapshot.active()
        assert rotated is not None
        assert rotated.kid != first.kid
    finally:
        await other.dispose()
        await runtime.close()


# Settings and wiring.


@pytest.mark.parametrize(
    ("env", "kind"),
    [
        ({}, KeyStoreKind.FILE),
        ({"WARRANT_KEY_STORE": "database", "WARRANT_KEY_ENCRYPTION_KEY": KEK_B64}, "database"),
        ({"WARRANT_KEY_STORE": "kms", "WARRANT_KMS_REGION": "eu-west-1"}, KeyStoreKind.KMS),
        (
            {
                "WARRANT_KEY_STORE": "KMS",
                "WARRANT_KMS_REGION": "us-gov-west-1",
                "WARRANT_KMS_ENDPOINT": "http://127.0.0.1:4566",
                "WARRANT_KEY_ENCRYPTION_KEY": KEK_B64,
            },
            KeyStoreKind.KMS,
        ),
    ],
)
def test_key_store_settings(data_dir: Path, env: dict[str, str], kind: str) -> None:
    """Each store's settings are accepted, and the KEK is in no repr of the settings."""
    settings = Settings.from_env(issuer_env(data_dir, **env))
    assert settings.key_store.kind == kind
    assert KEK_B64 not in repr(settings)
    assert repr(KEK_BYTES) not in repr(settings)
    if "WARRANT_KEY_ENCRYPTION_KEY" in env:
        kek = settings.key_store.key_encryption_key
        assert kek is not None
        assert kek.id == KeyEncryptionKey(KEK_BYTES).id
        assert repr(kek) == f"KeyEncryptionKey(id={kek.id!r})"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"WARRANT_KEY_STORE": "vault"}, "WARRANT_KEY_STORE='vault' is not supported"),
        ({"WARRANT_KEY_STORE": "database"}, "needs WARRANT_KEY_ENCRYPTION_KEY"),
        (
            {"WARRANT_KEY_STORE": "database", "WARRANT_KEY_ENCRYPTION_KEY": "not base64 at all!"},
            "WARRANT_KEY_ENCRYPTION_KEY must be 32 random bytes",
        ),
        (
            {
                "WARRANT_KEY_STORE": "database",
                "WARRANT_KEY_ENCRYPTION_KEY": base64.b64encode(b"sixteen byte key").decode(),
            },
            "WARRANT_KEY_ENCRYPTION_KEY must be 32 random bytes",
        ),
        ({"WARRANT_KEY_STORE": "kms"}, "needs WARRANT_KMS_REGION"),
        (
            {"WARRANT_KEY_STORE": "kms", "WARRANT_KMS_REGION": "useast1"},
            "WARRANT_KMS_REGION='useast1' is not an AWS region",
        ),
        (
            {"WARRANT_KEY_STORE": "kms", "WARRANT_KMS_REGION": REGION, "WARRANT_KMS_ENDPOINT": "x"},
            "WARRANT_KMS_ENDPOINT='x' must be an http(s) URL",
        ),
        ({"WARRANT_KMS_REGION": REGION}, "WARRANT_KMS_REGION is set but WARRANT_KEY_STORE is file"),
        (
            {
                "WARRANT_KEY_STORE": "database",
                "WARRANT_KEY_ENCRYPTION_KEY": KEK_B64,
                "WARRANT_KMS_ENDPOINT": "http://127.0.0.1:1",
            },
            "WARRANT_KMS_ENDPOINT is set but WARRANT_KEY_STORE is database",
        ),
        (
            {"WARRANT_KEY_ENCRYPTION_KEY": KEK_B64},
            "WARRANT_KEY_ENCRYPTION_KEY is set but WARRANT_KEY_STORE is file",
        ),
    ],
)
def test_bad_key_store_settings_name_the_variable(
    data_dir: Path, env: dict[str, str], message: str
) -> None:
    """Every mistake fails at startup naming the variable, and no error repeats the KEK."""
    with pytest.raises(ConfigError, match=re.escape(message)) as caught:
        Settings.from_env(issuer_env(data_dir, **env))
    kek = env.get("WARRANT_KEY_ENCRYPTION_KEY")
    if kek is not None:
        assert kek not in str(caught.value)


async def test_the_store_the_settings_name(
    data_dir: Path, engine: AsyncEngine, clock: Clock
) -> None:
    """file gives the FileKeyStore; database gives a SqlKeyStore on the engine, or, without
    one (the command line), a store that opens the database (migrating it) for each call."""
    file_settings = Settings.from_env(issuer_env(data_dir))
    assert isinstance(build_key_store(file_settings, engine), FileKeyStore)
    url = f"sqlite+aiosqlite:///{data_dir / 'one-shot.db'}"
    settings = Settings.from_env(
        issuer_env(
            data_dir,
            WARRANT_KEY_STORE="database",
            WARRANT_KEY_ENCRYPTION_KEY=KEK_B64,
            WARRANT_DATABASE_URL=url,
        )
    )
    assert isinstance(build_key_store(settings, engine), SqlKeyStore)
    one_shot = build_key_store(settings, None)
    assert isinstance(one_shot, OneShotKeyStore)
    assert await one_shot.revision() == EMPTY_REVISION
    created = await KeyManager(one_shot, POLICY, Algorithm.ES256, clock).ensure_initialized()
    assert await one_shot.revision() == created.revision
    assert (await one_shot.load()).records == created.records


async def test_database_errors_are_keys_errors(tmp_path: Path) -> None:
    """A database without the key tables is a KeysError saying to migrate, not a traceback."""
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}")
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE unrelated (id INTEGER)"))
        with pytest.raises(KeysError, match="key tables are missing; run 'warrant db upgrade'"):
            await sealed_store(engine).revision()
    finally:
        await engine.dispose()
