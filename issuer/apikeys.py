"""Bearer keys for the internal API: their format, the store that keeps only their hashes, a
short-lived authentication cache, and the first-run bootstrap that writes one key per role."""

from __future__ import annotations

import asyncio
import base64
import builtins
import enum
import hashlib
import hmac
import os
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, cast

from cachetools import TTLCache
from sqlalchemy import CursorResult, String, func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import Mapped, mapped_column

from issuer.db import Base, UtcDateTime, database_errors, session_factory
from issuer.errors import NotFound
from issuer.singleflight import SingleFlight

__all__ = [
    "MAX_PRESENTED_CHARS",
    "ApiKey",
    "ApiKeyStore",
    "CachedApiKeyStore",
    "Role",
    "SqlApiKeyStore",
    "ensure_bootstrap_keys",
    "hash_key",
    "key_file",
]


class Role(enum.StrEnum):
    """What a key may do: ADMIN manages tenants and keys; AGENT mints tokens (and, later, manages
    sandboxes)."""

    ADMIN = "admin"
    AGENT = "agent"


KEY_PREFIX = "wrn"
_SECRET_BYTES = 32  # 256 bits: out of reach of guessing, so a fast hash is enough (see hash_key)
_SECRET_CHARS = 43  # unpadded base64url of 32 bytes
# Anything longer is not a key; refuse it before hashing or touching the database.
MAX_PRESENTED_CHARS = 200
_KEY_SHAPE = re.compile(
    rf"{KEY_PREFIX}_(?:{'|'.join(re.escape(role.value) for role in Role)})"
    rf"_[A-Za-z0-9_-]{{{_SECRET_CHARS}}}"
)
_KEY_ID_SHAPE = re.compile(r"[0-9a-f]{12}")
_KEY_ID_BYTES = 6  # 12 hex characters: public, only needs to be unique among a handful of keys


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A key's public facts. Never holds the secret or its hash."""

    key_id: str
    role: Role
    created_at: datetime


def hash_key(key: str) -> str:
    """SHA-256 hex of the whole key, as stored.

    A slow KDF (bcrypt, scrypt, argon2) protects low-entropy passwords against offline guessing.
    These keys are 256 random bits, so guessing is hopeless with any hash; a fast one keeps
    authentication cheap on every internal API request.
    """
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def key_file(data_dir: Path, role: Role) -> Path:
    """Where the bootstrap key for `role` is written: `<data_dir>/<role>.key`."""
    return data_dir / f"{role.value}.key"


class ApiKeyStore(Protocol):
    """Where API keys live, as hashes. SQL implementations raise Unavailable when the database
    cannot be reached."""

    async def create(self, role: Role) -> tuple[ApiKey, str]:
        """A new active key for `role`; the plaintext is returned here once and never again."""
        ...

    async def authenticate(self, presented: str) -> ApiKey | None:
        """The active key matching `presented`; None when it is malformed, too long, unknown or
        revoked. Never raises for a bad key."""
        ...

    async def list(self) -> builtins.list[ApiKey]:
        """Every active (unrevoked) key, oldest first; empty when there are none."""
        ...

    async def revoke(self, key_id: str) -> None:
        """Revoke a key; revoking a revoked key is a no-op. Raises NotFound for an unknown id."""
        ...

    async def count_active(self, role: Role) -> int:
        """How many unrevoked keys `role` has."""
        ...


class ApiKeyRow(Base):
    __tablename__ = "api_keys"

    key_id: Mapped[str] = mapped_column("id", String(12), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)

    def __repr__(self) -> str:
        return f"ApiKeyRow(key_id={self.key_id!r}, role={self.role!r})"

    def to_api_key(self) -> ApiKey:
        return ApiKey(key_id=self.key_id, role=Role(self.role), created_at=self.created_at)


class SqlApiKeyStore:
    """ApiKeyStore on the shared SQL database (table `api_keys`)."""

    def __init__(self, engine: AsyncEngine, clock: Callable[[], datetime]) -> None:
        self._sessions = session_factory(engine)
        self._clock = clock

    def __repr__(self) -> str:
        return "SqlApiKeyStore()"

    async def create(self, role: Role) -> tuple[ApiKey, str]:
        role = Role(role)
        secret = base64.urlsafe_b64encode(secrets.token_bytes(_SECRET_BYTES)).rstrip(b"=")
        plaintext = f"{KEY_PREFIX}_{role.value}_{secret.decode('ascii')}"
        # A 48-bit id colliding among a handful of keys is negligible; were it to happen, the
        # primary key refuses the insert rather than overwriting a key.
        key = ApiKey(
            key_id=secrets.token_hex(_KEY_ID_BYTES),
            role=role,
            created_at=self._clock().astimezone(UTC),
        )
        with database_errors():
            async with self._sessions.begin() as session:
                session.add(
                    ApiKeyRow(
                        key_id=key.key_id,
                        role=role.value,
                        key_hash=hash_key(plaintext),
                        created_at=key.created_at,
                    )
                )
        return key, plaintext

    async def authenticate(self, presented: str) -> ApiKey | None:
        if not _well_formed(presented):
            return None
        digest = hash_key(presented)
        with database_errors():
            async with self._sessions() as session:
                row = await session.scalar(select(ApiKeyRow).where(ApiKeyRow.key_hash == digest))
        # The lookup already matched on the hash; comparing again in constant time keeps the
        # decision itself free of timing differences whatever the database's comparison does.
        if row is None or not hmac.compare_digest(row.key_hash, digest):
            return None
        if row.revoked_at is not None:
            return None
        return row.to_api_key()

    async def list(self) -> builtins.list[ApiKey]:
        with database_errors():
            async with self._sessions() as session:
                rows = (
                    await session.scalars(select(ApiKeyRow).where(ApiKeyRow.revoked_at.is_(None)))
                ).all()
        keys = [row.to_api_key() for row in rows]
        return sorted(keys, key=lambda key: (key.created_at, key.key_id))

    async def revoke(self, key_id: str) -> None:
        if not isinstance(key_id, str) or not _KEY_ID_SHAPE.fullmatch(key_id):
            # Not echoed: an operator may paste the secret key here by mistake.
            raise NotFound("no API key with that id; key ids are 12 hex characters")
        with database_errors():
            async with self._sessions.begin() as session:
                # Update first: the write lock it takes makes the existence check below consistent.
                result = cast(
                    "CursorResult[Any]",
                    await session.execute(
                        update(ApiKeyRow)
                        .where(ApiKeyRow.key_id == key_id, ApiKeyRow.revoked_at.is_(None))
                        .values(revoked_at=self._clock().astimezone(UTC))
                    ),
                )
                if result.rowcount == 0 and await session.get(ApiKeyRow, key_id) is None:
                    raise NotFound(f"no API key {key_id!r}; 'warrant keys list' shows them")

    async def count_active(self, role: Role) -> int:
        with database_errors():
            async with self._sessions() as session:
                count = await session.scalar(
                    select(func.count())
                    .select_from(ApiKeyRow)
                    .where(ApiKeyRow.role == Role(role).value, ApiKeyRow.revoked_at.is_(None))
                )
        return int(count or 0)


class CachedApiKeyStore:
    """An ApiKeyStore in front of another that remembers successful authentications for `ttl`,
    keyed by the key's hash (never its plaintext).

    `revoke` through this store clears its cache at once. A key revoked by another process (or
    another replica) keeps working here for at most `ttl`: that is the revocation delay, so keep it
    short (seconds). Failed authentications are never cached. Entries age on `timer` (the
    monotonic clock by default: a step of the wall clock can neither keep one alive nor expire it
    early).
    """

    def __init__(
        self,
        inner: ApiKeyStore,
        ttl: timedelta,
        *,
        timer: Callable[[], float] = time.monotonic,
        maxsize: int = 1_024,
    ) -> None:
        self._inner = inner
        self._ttl = ttl
        self._cache: TTLCache[str, ApiKey] = TTLCache(
            maxsize=maxsize, ttl=ttl.total_seconds(), timer=timer
        )
        # Bumped on every revoke; an authentication in flight during one must not cache its result.
        self._generation = 0
        self._flights: SingleFlight[str, ApiKey | None] = SingleFlight()

    def __repr__(self) -> str:
        return f"CachedApiKeyStore(inner={self._inner!r}, ttl={self._ttl!r})"

    async def create(self, role: Role) -> tuple[ApiKey, str]:
        return await self._inner.create(role)

    async def authenticate(self, presented: str) -> ApiKey | None:
        if not _well_formed(presented):
            return None
        digest = hash_key(presented)
        cached = self._cache.get(digest)
        if cached is not None:
            return cached
        # Taken now, not when the shared call starts: an invalidation from here on
        # must keep its result out of the cache.
        generation = self._generation

        async def load() -> ApiKey | None:
            key = await self._inner.authenticate(presented)
            if key is not None and generation == self._generation:
                self._cache[digest] = key
            return key

        return await self._flights.do(digest, load)

    async def list(self) -> builtins.list[ApiKey]:
        return await self._inner.list()

    async def revoke(self, key_id: str) -> None:
        try:
            await self._inner.revoke(key_id)
        finally:
            self._generation += 1
            self._cache.clear()

    async def count_active(self, role: Role) -> int:
        return await self._inner.count_active(role)


async def ensure_bootstrap_keys(store: ApiKeyStore, data_dir: Path) -> dict[Role, Path]:
    """Give every role a usable key on first run; return each role's key file path.

    For a role with no active key, create one and write it to `<data_dir>/<role>.key` (mode 0600,
    replaced atomically). A role that already has an active key gets no new one, even if its file
    is gone: the path is still returned and the caller reports the missing file. Run this once per
    deployment before starting workers: processes racing through a first start each create a key;
    all of them stay valid, the file holds one of them.
    """
    await asyncio.to_thread(data_dir.mkdir, mode=0o700, parents=True, exist_ok=True)
    paths: dict[Role, Path] = {}
    for role in Role:
        path = key_file(data_dir, role)
        if await store.count_active(role) == 0:
            key, plaintext = await store.create(role)
            try:
                await asyncio.to_thread(_write_private, path, plaintext)
            except BaseException:
                # A key nobody can read would block the next bootstrap for this role.
                await store.revoke(key.key_id)
                raise
        paths[role] = path
    return paths


def _well_formed(presented: object) -> bool:
    return (
        isinstance(presented, str)
        and len(presented) <= MAX_PRESENTED_CHARS
        and _KEY_SHAPE.fullmatch(presented) is not None
    )


def _write_private(path: Path, content: str) -> None:
    """Atomically replace `path` with `content`, readable by the owner only (0600).

    The temporary file is created 0600 from the start (never briefly world-readable) in the same
    directory, so the rename cannot cross file systems; fsync of file and directory makes the new
    key survive a crash. No trailing newline: the file's content is the key, byte for byte.
    """
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(temporary, flags, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as file:
            file.write(content)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
