"""FileKeyStore: the KeyStore in a local directory, safe across processes and crashes.

    <dir>/manifest.json   every record (public material only), replaced atomically
    <dir>/<kid>.pem       PKCS#8 private key of each pending or active key, mode 0600
    <dir>/.lock           flock'd exclusively by `apply`, shared by `load`

The directory belongs to the store. Write order makes every crash point safe: new private keys
first, then the manifest (the commit point), then deletion of private keys that will never sign
again. A private key file without a manifest entry is an orphan: ignored by `load`, deleted by
the next write. The very first write puts an empty manifest down before any key, so private
keys with no manifest at all can only mean a lost manifest: that store is corrupt, never
silently started afresh.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import threading
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from types import MappingProxyType

from keys.atomic import Filesystem, OsFilesystem, is_temp
from keys.errors import KeysError, KeyStoreCorrupt
from keys.file_lock import EXCLUSIVE, SHARED, file_lock
from keys.jwk import JoseKey, generate_key, private_pem, public_jwk
from keys.manifest import ManifestError, decode_manifest, encode_manifest
from keys.model import MAX_PUBLISHED_KEYS, KeyRecord, KeyState
from keys.protocols import KeySnapshot, Plan, Planner, Signer
from keys.signer import LocalSigner
from keys.transitions import SIGNING_STATES, apply_plan, check_invariants

__all__ = ["DEFAULT_LOCK_TIMEOUT", "EMPTY_REVISION", "FileKeyStore"]

# A rotation holds the lock for the time it takes to generate an RSA key and fsync a few files
# (well under a second); ten seconds means the other process is stuck, not busy.
DEFAULT_LOCK_TIMEOUT = timedelta(seconds=10)

MANIFEST_NAME = "manifest.json"
LOCK_NAME = ".lock"
PEM_SUFFIX = ".pem"
EMPTY_REVISION = "empty"
DIRECTORY_MODE = 0o700

# A kid is an RFC 7638 thumbprint: unpadded base64url of a SHA-256 digest.
_KID = re.compile(r"[A-Za-z0-9_-]{43}")


class FileKeyStore:
    """A KeyStore in one directory. Blocking file work runs in a worker thread."""

    def __init__(
        self,
        directory: Path,
        *,
        fs: Filesystem | None = None,
        lock_timeout: timedelta = DEFAULT_LOCK_TIMEOUT,
        max_published: int = MAX_PUBLISHED_KEYS,
    ) -> None:
        self._directory = directory
        self._fs: Filesystem = fs if fs is not None else OsFilesystem()
        self._lock_timeout = lock_timeout
        self._max_published = max_published
        # Parsed signers by kid, with the SHA-256 of the PEM they came from: a reload re-reads
        # the small PEM files but parses only those that changed.
        self._signers: dict[str, tuple[bytes, LocalSigner]] = {}
        self._signers_lock = threading.Lock()

    @property
    def directory(self) -> Path:
        return self._directory

    @property
    def manifest_path(self) -> Path:
        return self._directory / MANIFEST_NAME

    async def load(self) -> KeySnapshot:
        return await asyncio.to_thread(self._load)

    async def revision(self) -> str:
        return await asyncio.to_thread(self._revision)

    async def apply(self, planner: Planner) -> KeySnapshot:
        return await asyncio.to_thread(self._apply, planner)

    def __repr__(self) -> str:
        return f"FileKeyStore({str(self._directory)!r})"

    # Reading.

    def _revision(self) -> str:
        try:
            return _stat_revision(os.stat(self.manifest_path))
        except FileNotFoundError:
            return EMPTY_REVISION

    def _load(self) -> KeySnapshot:
        if not self._directory.is_dir():
            return _empty_snapshot()
        # A shared lock, so a concurrent rotation cannot delete a private key between our
        # reading the manifest that names it and our reading the key.
        with file_lock(self._directory / LOCK_NAME, SHARED, self._lock_timeout):
            return self._read()

    def _read(self) -> KeySnapshot:
        """The current snapshot; the caller holds the lock."""
        path = self.manifest_path
        try:
            with path.open("rb") as manifest:
                revision = _stat_revision(os.fstat(manifest.fileno()))
                raw = manifest.read()
        except FileNotFoundError:
            self._check_no_lost_manifest()
            return _empty_snapshot()
        except OSError as exc:
            raise KeyStoreCorrupt(str(path), f"cannot be read: {exc.strerror}") from exc
        try:
            records = decode_manifest(raw)
        except ManifestError as exc:
            raise KeyStoreCorrupt(str(path), str(exc)) from exc
        signers = self._signers_for(records)
        return KeySnapshot(records=records, signers=MappingProxyType(signers), revision=revision)

    def _check_no_lost_manifest(self) -> None:
        keys = [p.name for p in self._directory.glob(f"*{PEM_SUFFIX}") if _is_key_file(p)]
        if keys:
            raise KeyStoreCorrupt(
                str(self.manifest_path),
                f"is missing but {len(keys)} private key files are present; restore it from a "
                "backup, or move the .pem files away to start over with new keys (which "
                "invalidates every outstanding token)",
            )

    def _signers_for(self, records: Sequence[KeyRecord]) -> dict[str, Signer]:
        signers: dict[str, Signer] = {}
        for record in records:
            if record.state in SIGNING_STATES:
                signers[record.kid] = self._signer(record)
        with self._signers_lock:
            # Forget keys that will never sign again: no private key outlives its usefulness.
            for kid in self._signers.keys() - signers.keys():
                del self._signers[kid]
        return signers

    def _signer(self, record: KeyRecord) -> LocalSigner:
        path = self._pem_path(record.kid)
        try:
            pem = path.read_bytes()
        except FileNotFoundError:
            raise KeyStoreCorrupt(
                str(path), f"private key of the {record.state.value} key {record.kid} is missing"
            ) from None
        except OSError as exc:
            raise KeyStoreCorrupt(str(path), f"cannot be read: {exc.strerror}") from exc
        digest = hashlib.sha256(pem).digest()
        with self._signers_lock:
            cached = self._signers.get(record.kid)
        if cached is not None and cached[0] == digest:
            return cached[1]
        try:
            signer = LocalSigner.from_pem(pem, record.alg)
        except KeysError as exc:
            raise KeyStoreCorrupt(str(path), str(exc)) from exc
        if signer.kid != record.kid:
            raise KeyStoreCorrupt(str(path), f"holds a different key than kid {record.kid}")
        with self._signers_lock:
            self._signers[record.kid] = (digest, signer)
        return signer

    # Writing.

    def _apply(self, planner: Planner) -> KeySnapshot:
        try:
            return self._apply_locked(planner)
        except OSError as exc:
            # Disk full, permissions, a file where the directory should be: the operator's
            # problem to fix, reported like any other store error rather than as a traceback.
            where = exc.filename or self._directory
            raise KeysError(f"key store {where}: cannot write: {exc.strerror or exc}") from exc

    def _apply_locked(self, planner: Planner) -> KeySnapshot:
        self._ensure_directory()
        with file_lock(self._directory / LOCK_NAME, EXCLUSIVE, self._lock_timeout):
            current = self._read()
            plan = planner(current.records)
            if plan.empty:
                return current
            new_keys, generated = self._generate(plan)
            records = apply_plan(current.records, plan, generated)
            check_invariants(records, self._max_published)
            if current.revision == EMPTY_REVISION:
                self._fs.write_atomic(self.manifest_path, encode_manifest(()))
            written: list[tuple[JoseKey, bytes]] = []
            for key in new_keys:
                pem = private_pem(key)
                self._fs.write_atomic(self._pem_path(key.thumbprint()), pem)
                written.append((key, pem))
            previous = self._stat_manifest()
            self._fs.write_atomic(self.manifest_path, encode_manifest(records))
            self._keep_revision_moving(previous)
            self._sweep(records)
            self._prime(written, records)
            return self._read()

    def _generate(self, plan: Plan) -> tuple[list[JoseKey], list[KeyRecord]]:
        """The private keys `plan` asks for (not yet written) and their records."""
        keys: list[JoseKey] = []
        records: list[KeyRecord] = []
        for new in plan.generate:
            key = generate_key(new.alg)
            keys.append(key)
            records.append(
                KeyRecord(
                    kid=key.thumbprint(),
                    alg=new.alg,
                    state=new.state,
                    created_at=plan.now,
                    public_jwk=public_jwk(key, new.alg),
                    activated_at=plan.now if new.state is KeyState.ACTIVE else None,
                )
            )
        return keys, records

    def _sweep(self, records: Sequence[KeyRecord]) -> None:
        """Delete private keys that will never sign again, orphans, and crashed temp files."""
        keep = {r.kid + PEM_SUFFIX for r in records if r.state in SIGNING_STATES}
        for path in sorted(self._directory.iterdir()):
            if is_temp(path) or (_is_key_file(path) and path.name not in keep):
                self._fs.remove(path)

    def _prime(
        self, written: Sequence[tuple[JoseKey, bytes]], records: Sequence[KeyRecord]
    ) -> None:
        """Cache signers for the keys we just generated, so the reload does not re-parse them."""
        algs = {r.kid: r.alg for r in records}
        with self._signers_lock:
            for key, pem in written:
                signer = LocalSigner(key, algs[key.thumbprint()])
                self._signers[signer.kid] = (hashlib.sha256(pem).digest(), signer)

    def _stat_manifest(self) -> os.stat_result | None:
        try:
            return os.stat(self.manifest_path)
        except FileNotFoundError:
            return None

    def _keep_revision_moving(self, previous: os.stat_result | None) -> None:
        """Make the new manifest's mtime later than the old one's.

        The revision is (mtime, size, inode); a freed inode can be reused and file system
        timestamps can be coarse, so two quick writes could otherwise look identical.
        """
        if previous is None:
            return
        current = os.stat(self.manifest_path)
        if current.st_mtime_ns <= previous.st_mtime_ns:
            later = previous.st_mtime_ns + 1
            os.utime(self.manifest_path, ns=(later, later))

    def _ensure_directory(self) -> None:
        self._directory.mkdir(mode=DIRECTORY_MODE, parents=True, exist_ok=True)
        if self._directory.stat().st_mode & 0o777 != DIRECTORY_MODE:
            self._directory.chmod(DIRECTORY_MODE)

    def _pem_path(self, kid: str) -> Path:
        return self._directory / f"{kid}{PEM_SUFFIX}"


def _is_key_file(path: Path) -> bool:
    """Named like one of our private keys: <43-character base64url thumbprint>.pem."""
    return path.suffix == PEM_SUFFIX and _KID.fullmatch(path.stem) is not None


def _stat_revision(stat: os.stat_result) -> str:
    return f"{stat.st_mtime_ns}:{stat.st_size}:{stat.st_ino}"


def _empty_snapshot() -> KeySnapshot:
    return KeySnapshot(records=(), signers=MappingProxyType({}), revision=EMPTY_REVISION)
