"""FileKeyStore: layout, modes, loading, corruption, invariants, locking, caching."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from keys.atomic import Filesystem, OsFilesystem
from keys.errors import KeysError, KeyStoreCorrupt, KeyStoreLocked
from keys.file_store import EMPTY_REVISION, FileKeyStore
from keys.jwk import (
    PUBLIC_MEMBERS,
    generate_key,
    import_pem,
    jwks_document,
    private_pem,
    thumbprint,
)
from keys.model import Algorithm, KeyRecord, KeyState, RotationPolicy
from keys.protocols import KeySnapshot, KeyStore, NewKey, Plan
from keys.rotation import plan_bootstrap, plan_rotate
from tests.keys.fakes import FakeClock, FaultyFilesystem, SimulatedCrash

ALG = Algorithm.ES256


def bootstrap_planner(
    clock: FakeClock, alg: Algorithm = ALG
) -> Callable[[Sequence[KeyRecord]], Plan]:
    return lambda records: plan_bootstrap(records, clock.now, alg)


def force_rotate_planner(clock: FakeClock) -> Callable[[Sequence[KeyRecord]], Plan]:
    return lambda records: plan_rotate(records, clock.now, RotationPolicy(), ALG, force=True).plan


def kid_in(snapshot: KeySnapshot, state: KeyState) -> str:
    return next(r.kid for r in snapshot.records if r.state is state)


def pem_names(directory: Path) -> set[str]:
    return {p.name for p in directory.glob("*.pem")}


def files(directory: Path) -> dict[str, bytes]:
    """Every file in the store directory and its content."""
    return {p.name: p.read_bytes() if p.is_file() else b"<dir>" for p in directory.iterdir()}


def modes(directory: Path) -> dict[str, int]:
    """The permission bits of the directory (as ".") and of every file in it."""
    found = {p.name: stat.S_IMODE(p.stat().st_mode) for p in directory.iterdir()}
    return {".": stat.S_IMODE(directory.stat().st_mode), **found}


def import_pem_public(private: bytes) -> bytes:
    """The public PEM of a private ES256 PEM."""
    return import_pem(private, ALG).as_pem(private=False)


def put(path: Path, data: bytes) -> None:
    """Write a file behind the store's back, as an operator or a bug might."""
    path.write_bytes(data)


def read_manifest(directory: Path) -> dict[str, Any]:
    return dict(json.loads((directory / "manifest.json").read_bytes()))


@pytest.fixture
def store_dir(data_dir: Path) -> Path:
    return data_dir / "keys"


@pytest.fixture
async def bootstrapped(store_dir: Path, clock: FakeClock) -> KeySnapshot:
    return await FileKeyStore(store_dir).apply(bootstrap_planner(clock))


@pytest.mark.parametrize("alg", list(Algorithm))
async def test_round_trip(alg: Algorithm, store_dir: Path, clock: FakeClock) -> None:
    """What one store instance writes, a fresh instance loads identically, with signers for the
    active and pending keys whose kids are their thumbprints."""
    written = await FileKeyStore(store_dir).apply(bootstrap_planner(clock, alg))
    loaded = await FileKeyStore(store_dir).load()
    assert loaded.records == written.records
    assert [r.state for r in loaded.records].count(KeyState.ACTIVE) == 1
    assert set(loaded.signers) == {r.kid for r in loaded.records}
    for r in loaded.records:
        assert r.alg is alg
        assert r.kid == thumbprint(r.public_jwk) == loaded.signers[r.kid].kid
        assert r.created_at == clock.now
    assert loaded.active() is not None
    assert loaded.active().activated_at == clock.now  # type: ignore[union-attr]


async def test_layout_and_modes(store_dir: Path, bootstrapped: KeySnapshot) -> None:
    """The directory is 0700; the manifest, private keys and lock file are 0600."""
    pems = {f"{r.kid}.pem" for r in bootstrapped.records}
    found = modes(store_dir)
    assert set(found) == {".", "manifest.json", ".lock"} | pems
    assert found.pop(".") == 0o700
    assert set(found.values()) == {0o600}
    manifest = read_manifest(store_dir)
    assert manifest["version"] == 1
    entry = manifest["keys"][0]
    assert set(entry) == {
        "kid", "alg", "state", "created_at", "activated_at", "retired_at", "revoked_at",
        "public_jwk",
    }  # fmt: skip
    assert entry["created_at"].endswith("Z")
    for name in pems:
        assert files(store_dir)[name].startswith(b"-----BEGIN " + b"PRIVATE KEY-----")


def test_loose_directory_mode_is_tightened(store_dir: Path, clock: FakeClock) -> None:
    """A pre-existing directory readable by others is made 0700 before keys are written."""
    store_dir.mkdir()
    store_dir.chmod(0o755)  # the loose mode the store must tighten
    asyncio.run(FileKeyStore(store_dir).apply(bootstrap_planner(clock)))
    assert modes(store_dir)["."] == 0o700


async def test_manifest_holds_no_private_material(
    bootstrapped: KeySnapshot, store_dir: Path
) -> None:
    """Every public_jwk in the manifest uses only allow-listed members."""
    for entry in read_manifest(store_dir)["keys"]:
        assert set(entry["public_jwk"]) <= set(PUBLIC_MEMBERS)


@pytest.mark.parametrize("create", [False, True], ids=["no directory", "empty directory"])
def test_empty_store_loads_empty(store_dir: Path, create: bool) -> None:
    """A missing directory or one without a manifest loads as an empty snapshot."""
    if create:
        store_dir.mkdir()
    store = FileKeyStore(store_dir)
    snapshot = asyncio.run(store.load())
    assert snapshot.records == ()
    assert dict(snapshot.signers) == {}
    assert snapshot.revision == EMPTY_REVISION == asyncio.run(store.revision())
    assert store_dir.exists() is create  # loading never creates the store


async def test_revision_moves_on_every_write_and_only_then(
    store_dir: Path, clock: FakeClock
) -> None:
    """Each write gives a new revision, which the returned snapshot carries; empty plans and
    loads leave it alone."""
    store = FileKeyStore(store_dir)
    seen = [await store.revision()]
    snapshot = await store.apply(bootstrap_planner(clock))
    seen.append(await store.revision())
    assert snapshot.revision == seen[-1]
    for _ in range(5):
        snapshot = await store.apply(force_rotate_planner(clock))
        seen.append(await store.revision())
        assert snapshot.revision == seen[-1]
    assert len(set(seen)) == len(seen)
    unchanged = await store.apply(bootstrap_planner(clock))  # not empty: plans nothing
    assert unchanged.revision == seen[-1] == await store.revision()
    assert (await FileKeyStore(store_dir).load()).revision == seen[-1]


async def test_signer_cache_avoids_reparsing(
    store_dir: Path, bootstrapped: KeySnapshot, clock: FakeClock
) -> None:
    """Reloads, including after a rotation changed the manifest, reuse the parsed signer of
    every key whose PEM did not change; a new store instance parses afresh."""
    store = FileKeyStore(store_dir)
    first = await store.load()
    pending = kid_in(first, KeyState.PENDING)
    assert (await store.load()).signers[pending] is first.signers[pending]
    rotated = await store.apply(force_rotate_planner(clock))
    assert rotated.active() is not None
    assert rotated.active().kid == pending  # type: ignore[union-attr]
    assert rotated.signers[pending] is first.signers[pending]
    new_pending = kid_in(rotated, KeyState.PENDING)
    assert (await store.load()).signers[new_pending] is rotated.signers[new_pending]
    assert (await FileKeyStore(store_dir).load()).signers[pending] is not first.signers[pending]


async def test_replaced_pem_is_noticed_despite_the_cache(
    store_dir: Path, bootstrapped: KeySnapshot
) -> None:
    """If a private key file changes under a cached signer, the next load checks it again."""
    store = FileKeyStore(store_dir)
    await store.load()
    active = kid_in(bootstrapped, KeyState.ACTIVE)
    put(store_dir / f"{active}.pem", private_pem(generate_key(ALG)))
    with pytest.raises(KeyStoreCorrupt, match="different key"):
        await store.load()


async def test_rotation_destroys_private_halves_that_never_sign_again(
    store_dir: Path, bootstrapped: KeySnapshot, clock: FakeClock
) -> None:
    """After a rotation the retired key stays published but its private key file is gone."""
    old_active = kid_in(bootstrapped, KeyState.ACTIVE)
    snapshot = await FileKeyStore(store_dir).apply(force_rotate_planner(clock))
    assert next(r for r in snapshot.records if r.kid == old_active).state is KeyState.RETIRED
    assert old_active not in snapshot.signers
    signing = {r.kid for r in snapshot.records if r.state in {KeyState.ACTIVE, KeyState.PENDING}}
    assert pem_names(store_dir) == {f"{kid}.pem" for kid in signing}
    published = {k["kid"] for k in json.loads(jwks_document(snapshot.records))["keys"]}
    assert old_active in published


async def test_orphans_are_ignored_then_swept(
    store_dir: Path, bootstrapped: KeySnapshot, clock: FakeClock
) -> None:
    """A private key without a manifest entry and a crashed temp file do not disturb a load,
    and the next write deletes them."""
    orphan = generate_key(ALG)
    put(store_dir / f"{orphan.thumbprint()}.pem", private_pem(orphan))
    put(store_dir / ".manifest.json.0123.tmp", b'{"vers')
    store = FileKeyStore(store_dir)
    assert (await store.load()).records == bootstrapped.records
    await store.apply(force_rotate_planner(clock))
    assert not (store_dir / f"{orphan.thumbprint()}.pem").exists()
    assert not (store_dir / ".manifest.json.0123.tmp").exists()


# --- corruption ----------------------------------------------------------------------------

Doc = dict[str, Any]


def _entry(doc: Doc, state: str) -> dict[str, Any]:
    return next(e for e in doc["keys"] if e["state"] == state)


def _set(which: str, **changes: Any) -> Callable[[Doc, Path], None]:
    def mutate(doc: Doc, _: Path) -> None:
        _entry(doc, which).update(changes)

    return mutate


def _set_jwk(which: str, **changes: str) -> Callable[[Doc, Path], None]:
    def mutate(doc: Doc, _: Path) -> None:
        _entry(doc, which)["public_jwk"].update(changes)

    return mutate


def _two_actives(doc: Doc, _: Path) -> None:
    _entry(doc, "pending").update(state="active", activated_at="2026-01-01T00:00:00Z")


def _no_active(doc: Doc, _: Path) -> None:
    _entry(doc, "active").update(state="retired", retired_at="2026-01-01T00:00:00Z")


def _fake_kid(doc: Doc, _: Path) -> None:
    entry = _entry(doc, "active")
    entry["kid"] = entry["public_jwk"]["kid"] = "A" * 43


def _duplicate(doc: Doc, _: Path) -> None:
    doc["keys"].append(dict(_entry(doc, "pending")))


def _pem(state: str, make: Callable[[Path, Doc], bytes | None]) -> Callable[[Doc, Path], None]:
    def mutate(doc: Doc, directory: Path) -> None:
        path = directory / f"{_entry(doc, state)['kid']}.pem"
        content = make(directory, doc)
        if content is None:
            path.unlink()
        else:
            path.write_bytes(content)

    return mutate


def _other_pem(directory: Path, doc: Doc) -> bytes:
    return (directory / f"{_entry(doc, 'pending')['kid']}.pem").read_bytes()


def _public_pem(directory: Path, doc: Doc) -> bytes:
    private = (directory / f"{_entry(doc, 'active')['kid']}.pem").read_bytes()
    return import_pem_public(private)


def _pem_is_directory(doc: Doc, directory: Path) -> None:
    path = directory / f"{_entry(doc, 'active')['kid']}.pem"
    path.unlink()
    path.mkdir()


CORRUPTIONS: list[tuple[str, Callable[[Doc, Path], None] | bytes, str | None, str]] = [
    ("invalid JSON", b'{"version": 1, "keys": [', None, "not valid JSON"),
    ("not an object", b"[]", None, "not a JSON object"),
    ("wrong version", lambda doc, _: doc.update(version=2), None, "version 2"),
    ("no keys list", lambda doc, _: doc.pop("keys"), None, '"keys"'),
    ("entry not an object", lambda doc, _: doc["keys"].append(1), None, "keys[2] is not"),
    ("kid not a string", _set("active", kid=5), None, "kid is not a non-empty string"),
    ("jwk not strings", _set("active", public_jwk={"kty": 1}), None, "not an object of strings"),
    ("no created_at", _set("active", created_at=None), None, "created_at is missing"),
    ("missing field", lambda doc, _: _entry(doc, "active").pop("alg"), None, "lacks fields"),
    ("unknown field", _set("active", colour="red"), None, "unknown fields"),
    ("bad timestamp", _set("active", created_at="yesterday"), None, "created_at"),
    ("naive timestamp", _set("active", created_at="2026-01-01T00:00:00"), None, "time zone"),
    ("number timestamp", _set("active", created_at=1767225600), None, "created_at"),
    ("unknown state", _set("active", state="zombie"), None, "state"),
    ("unknown alg", _set("active", alg="HS256"), None, "alg"),
    ("active without activated_at", _set("active", activated_at=None), None, "activated_at"),
    ("kid mismatch", _fake_kid, None, "thumbprint"),
    ("jwk kid differs", _set_jwk("active", kid="other"), None, "differ"),
    ("private member", _set_jwk("active", d="c2VjcmV0"), None, "non-public members ['d']"),
    ("bad public key", _set_jwk("active", x="AAAA"), None, "not a valid ES256 key"),
    ("two actives", _two_actives, None, "2 active keys"),
    ("no active", _no_active, None, "0 active keys"),
    ("duplicate kid", _duplicate, None, "more than once"),
    ("missing pem for active", _pem("active", lambda d, doc: None), "active", "missing"),
    ("missing pem for pending", _pem("pending", lambda d, doc: None), "pending", "missing"),
    ("garbage pem", _pem("active", lambda d, doc: b"not a key"), "active", "not a readable"),
    ("pem of another key", _pem("active", _other_pem), "active", "different key"),
    ("public pem", _pem("active", _public_pem), "active", "public key where a private key"),
    ("unreadable pem", _pem_is_directory, "active", "cannot be read"),
]


@pytest.mark.parametrize(
    ("mutation", "culprit", "problem"),
    [pytest.param(m, c, p, id=name) for name, m, c, p in CORRUPTIONS],
)
async def test_corrupt_store_is_refused_naming_the_file(
    store_dir: Path,
    bootstrapped: KeySnapshot,
    mutation: Callable[[Doc, Path], None] | bytes,
    culprit: str | None,
    problem: str,
) -> None:
    """A damaged store raises KeyStoreCorrupt naming the bad file and the problem, on load and
    on apply, and nothing is regenerated or rewritten."""
    manifest = store_dir / "manifest.json"
    damage(store_dir, mutation)
    expected_file = (
        manifest
        if culprit is None
        else store_dir / f"{kid_in(bootstrapped, KeyState(culprit))}.pem"
    )
    before = files(store_dir)
    store = FileKeyStore(store_dir)
    with pytest.raises(KeyStoreCorrupt) as loading:
        await store.load()
    assert loading.value.path == str(expected_file)
    assert problem in loading.value.problem
    assert str(expected_file) in str(loading.value)
    assert "c2VjcmV0" not in str(loading.value)
    with pytest.raises(KeyStoreCorrupt):
        await store.apply(_must_not_run)
    assert files(store_dir) == before


def damage(directory: Path, mutation: Callable[[Doc, Path], None] | bytes) -> None:
    """Replace the manifest with `mutation`, or edit its JSON (and the PEMs) with it."""
    if isinstance(mutation, bytes):
        put(directory / "manifest.json", mutation)
        return
    doc = read_manifest(directory)
    mutation(doc, directory)
    put(directory / "manifest.json", json.dumps(doc).encode())


def _must_not_run(records: Sequence[KeyRecord]) -> Plan:
    pytest.fail("the planner ran on a corrupt store")


def test_unreadable_manifest_is_corrupt(store_dir: Path, clock: FakeClock) -> None:
    """A manifest that cannot be read (here: a directory in its place) is corrupt, not empty."""
    asyncio.run(FileKeyStore(store_dir).apply(bootstrap_planner(clock)))
    manifest = store_dir / "manifest.json"
    manifest.unlink()
    manifest.mkdir()
    with pytest.raises(KeyStoreCorrupt, match="cannot be read"):
        asyncio.run(FileKeyStore(store_dir).load())


# --- invariants ----------------------------------------------------------------------------


def _second_active(records: Sequence[KeyRecord]) -> Plan:
    pending = next(r.kid for r in records if r.state is KeyState.PENDING)
    return Plan(now=records[0].created_at, transitions={pending: KeyState.ACTIVE})


def _too_many(records: Sequence[KeyRecord]) -> Plan:
    return Plan(now=records[0].created_at, generate=(NewKey(ALG, KeyState.PENDING),) * 9)


def _reactivate(records: Sequence[KeyRecord]) -> Plan:
    active = next(r.kid for r in records if r.state is KeyState.ACTIVE)
    return Plan(now=records[0].created_at, transitions={active: KeyState.PENDING})


def _unknown(records: Sequence[KeyRecord]) -> Plan:
    return Plan(now=records[0].created_at, remove=("nope",))


def _born_retired(records: Sequence[KeyRecord]) -> Plan:
    return Plan(now=records[0].created_at, generate=(NewKey(ALG, KeyState.RETIRED),))


def _remove_active(records: Sequence[KeyRecord]) -> Plan:
    active = next(r.kid for r in records if r.state is KeyState.ACTIVE)
    return Plan(now=records[0].created_at, remove=(active,))


def _retire_the_only_active(records: Sequence[KeyRecord]) -> Plan:
    active = next(r.kid for r in records if r.state is KeyState.ACTIVE)
    return Plan(now=records[0].created_at, transitions={active: KeyState.RETIRED})


def _raises(records: Sequence[KeyRecord]) -> Plan:
    raise KeysError("the planner said no")


@pytest.mark.parametrize(
    ("planner", "message"),
    [
        (_second_active, "2 active keys"),
        (_remove_active, "only retired or revoked keys can be removed"),
        (_retire_the_only_active, "0 active keys"),
        (_too_many, "more than the limit of 10"),
        (_reactivate, "cannot go from active to pending"),
        (_unknown, "not in the store"),
        (_born_retired, "cannot start retired"),
        (_raises, "the planner said no"),
    ],
)
async def test_bad_plans_write_nothing(
    store_dir: Path,
    bootstrapped: KeySnapshot,
    planner: Callable[[Sequence[KeyRecord]], Plan],
    message: str,
) -> None:
    """A plan that would break an invariant (or a planner that raises) fails with KeysError
    and leaves every file as it was."""
    before = files(store_dir)
    with pytest.raises(KeysError, match=message):
        await FileKeyStore(store_dir).apply(planner)
    assert files(store_dir) == before


async def test_max_published_comes_from_the_constructor(
    store_dir: Path, bootstrapped: KeySnapshot, clock: FakeClock
) -> None:
    """A store built with a lower limit refuses a write that would exceed it."""
    with pytest.raises(KeysError, match="limit of 2"):
        await FileKeyStore(store_dir, max_published=2).apply(force_rotate_planner(clock))


# --- locking -------------------------------------------------------------------------------


@pytest.fixture
def held_lock(store_dir: Path, bootstrapped: KeySnapshot) -> Iterator[None]:
    fd = os.open(store_dir / ".lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        os.close(fd)


@pytest.mark.usefixtures("held_lock")
async def test_lock_timeout(store_dir: Path, clock: FakeClock) -> None:
    """While another holder keeps the lock, apply and load give up with KeyStoreLocked."""
    store = FileKeyStore(store_dir, lock_timeout=timedelta(milliseconds=50))
    with pytest.raises(KeyStoreLocked, match="held the lock"):
        await store.apply(force_rotate_planner(clock))
    with pytest.raises(KeyStoreLocked):
        await store.load()


async def test_a_waiting_writer_proceeds_when_the_lock_is_released(
    store_dir: Path, bootstrapped: KeySnapshot, clock: FakeClock
) -> None:
    """apply polls the lock and goes ahead as soon as the other holder lets go."""
    fd = os.open(store_dir / ".lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    asyncio.get_running_loop().call_later(0.05, os.close, fd)
    store = FileKeyStore(store_dir, lock_timeout=timedelta(seconds=5))
    snapshot = await store.apply(force_rotate_planner(clock))
    assert snapshot.revision != bootstrapped.revision


def test_lock_that_cannot_be_opened(store_dir: Path) -> None:
    """A lock path that cannot be opened is a KeysError naming it, not an OSError."""
    (store_dir / ".lock").mkdir(parents=True)
    with pytest.raises(KeysError, match=r"\.lock: cannot open the lock"):
        asyncio.run(FileKeyStore(store_dir).load())


async def test_loads_share_the_lock(store_dir: Path, bootstrapped: KeySnapshot) -> None:
    """A reader holding the shared lock does not block another load."""
    fd = os.open(store_dir / ".lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        store = FileKeyStore(store_dir, lock_timeout=timedelta(milliseconds=50))
        assert (await store.load()).records == bootstrapped.records
    finally:
        os.close(fd)


class FrozenMtimeFilesystem(OsFilesystem):
    """Writes for real, then stamps every file with one fixed mtime: a coarse-clock file
    system on which two writes can land in the same tick."""

    def write_atomic(self, path: Path, data: bytes) -> None:
        super().write_atomic(path, data)
        os.utime(path, ns=(FROZEN_NS, FROZEN_NS))


FROZEN_NS = 1_700_000_000_000_000_000


async def test_revision_moves_even_when_mtime_does_not(store_dir: Path, clock: FakeClock) -> None:
    """If a write leaves the manifest's mtime where it was, the store moves it forward, so
    the revision cannot repeat however the inode and size fall out."""
    store = FileKeyStore(store_dir, fs=FrozenMtimeFilesystem())
    await store.apply(bootstrap_planner(clock))
    first = await store.revision()
    await store.apply(force_rotate_planner(clock))
    second = await store.revision()
    first_mtime, second_mtime = int(first.split(":")[0]), int(second.split(":")[0])
    assert FROZEN_NS <= first_mtime < second_mtime


def test_implementations_satisfy_their_protocols(store_dir: Path) -> None:
    """FileKeyStore is a KeyStore and OsFilesystem a Filesystem (checked by mypy)."""
    store: KeyStore = FileKeyStore(store_dir)
    fs: Filesystem = OsFilesystem()
    assert "keys" in repr(store)
    assert fs is not None


def test_lost_manifest_is_corrupt_not_empty(store_dir: Path, clock: FakeClock) -> None:
    """Private keys with no manifest at all mean the manifest was lost: the store refuses to
    load or to bootstrap over them, rather than mint new keys."""
    asyncio.run(FileKeyStore(store_dir).apply(bootstrap_planner(clock)))
    (store_dir / "manifest.json").unlink()
    store = FileKeyStore(store_dir)
    with pytest.raises(KeyStoreCorrupt, match="is missing but 2 private key files") as caught:
        asyncio.run(store.load())
    assert caught.value.path == str(store_dir / "manifest.json")
    with pytest.raises(KeyStoreCorrupt):
        asyncio.run(store.apply(bootstrap_planner(clock)))
    assert len(list(store_dir.glob("*.pem"))) == 2


def test_first_write_lays_down_an_empty_manifest_first(store_dir: Path, clock: FakeClock) -> None:
    """Bootstrapping a new store writes an empty manifest before any private key, so a crash
    mid-bootstrap leaves orphans beside a manifest, never a lost-manifest lookalike."""
    fs = FaultyFilesystem(crash_at=1)
    with pytest.raises(SimulatedCrash):
        asyncio.run(FileKeyStore(store_dir, fs=fs).apply(bootstrap_planner(clock)))
    assert fs.steps[0] == "write manifest.json"
    assert asyncio.run(FileKeyStore(store_dir).load()).records == ()


def test_files_not_named_like_keys_are_left_alone(store_dir: Path, clock: FakeClock) -> None:
    """Sweeping removes only files named <thumbprint>.pem, never someone else's .pem."""
    store = FileKeyStore(store_dir)
    asyncio.run(store.apply(bootstrap_planner(clock)))
    put(store_dir / "server.pem", b"not ours")
    asyncio.run(store.apply(force_rotate_planner(clock)))
    assert (store_dir / "server.pem").read_bytes() == b"not ours"


def test_unwritable_store_is_a_keys_error(data_dir: Path, clock: FakeClock) -> None:
    """When the store cannot be written (here a file sits where the directory should be), the
    OSError surfaces as a KeysError naming the path."""
    blocked = data_dir / "keys"
    put(blocked, b"")
    with pytest.raises(KeysError, match="cannot write") as caught:
        asyncio.run(FileKeyStore(blocked).apply(bootstrap_planner(clock)))
    assert str(blocked) in str(caught.value)
