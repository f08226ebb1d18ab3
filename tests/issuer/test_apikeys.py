"""Internal-API keys: format, hashed storage on SQLite and PostgreSQL, revocation, the
authentication cache and the first-run bootstrap files."""

from __future__ import annotations

import builtins
import hashlib
import re
import stat
from collections.abc import Iterator
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from issuer.apikeys import (
    ApiKey,
    ApiKeyRow,
    ApiKeyStore,
    CachedApiKeyStore,
    Role,
    SqlApiKeyStore,
    ensure_bootstrap_keys,
    hash_key,
)
from issuer.db import session_factory
from issuer.errors import NotFound
from tests.issuer.conftest import Clock

TTL = timedelta(seconds=2)
KEY_FORMAT = re.compile(r"wrn_(admin|agent)_[A-Za-z0-9_-]{43}")


@pytest.fixture
def store(engine: AsyncEngine, clock: Clock) -> SqlApiKeyStore:
    """The SQL API key store on a fresh database."""
    return SqlApiKeyStore(engine, clock)


@pytest.fixture
def statements(engine: AsyncEngine) -> Iterator[list[str]]:
    """Every SQL statement the engine sends, in order."""
    sent: list[str] = []

    def record(*args: Any) -> None:
        sent.append(args[2])

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    yield sent
    event.remove(engine.sync_engine, "before_cursor_execute", record)


def _other_key(role: Role = Role.AGENT) -> str:
    return f"wrn_{role.value}_" + "A" * 43


@pytest.mark.parametrize("role", list(Role))
async def test_created_key_has_the_format_and_authenticates(
    store: SqlApiKeyStore, clock: Clock, role: Role
) -> None:
    """A new key is wrn_<role>_<43 base64url chars> and authenticates as its public record."""
    key, plaintext = await store.create(role)
    assert KEY_FORMAT.fullmatch(plaintext)
    assert plaintext.startswith(f"wrn_{role.value}_")
    assert re.fullmatch(r"[0-9a-f]{12}", key.key_id)
    assert key.role is role
    assert key.created_at == clock()
    assert key.created_at.tzinfo is UTC
    assert await store.authenticate(plaintext) == key


async def test_keys_are_unique(store: SqlApiKeyStore) -> None:
    """Every created key has its own secret and id."""
    created = [await store.create(Role.AGENT) for _ in range(5)]
    assert len({plaintext for _, plaintext in created}) == 5
    assert len({key.key_id for key, _ in created}) == 5


async def test_wrong_key_does_not_authenticate(store: SqlApiKeyStore) -> None:
    """A well-formed key that was never issued, or one character off, authenticates as nobody."""
    _, plaintext = await store.create(Role.AGENT)
    assert await store.authenticate(_other_key()) is None
    flipped = plaintext[:-1] + ("B" if plaintext[-1] != "B" else "C")
    assert await store.authenticate(flipped) is None
    # The same secret under the other role's prefix is a different key.
    assert await store.authenticate(plaintext.replace("_agent_", "_admin_", 1)) is None


@pytest.mark.parametrize(
    "presented",
    [
        "",
        "wrn",
        "wrn_agent_",
        "wrn_agent_" + "A" * 42,
        "wrn_agent_" + "A" * 44,
        "wrn_root_" + "A" * 43,
        "WRN_AGENT_" + "A" * 43,
        "wrn_agent_" + "A" * 42 + "=",
        "wrn_agent_" + "A" * 42 + "ä",
        " wrn_agent_" + "A" * 43,
        "wrn_agent_" + "A" * 43 + "\n",
        "Bearer wrn_agent_" + "A" * 43,
        "x" * 201,
        "x" * 1_000_000,
    ],
)
async def test_malformed_keys_are_refused_without_a_query(
    store: SqlApiKeyStore, statements: list[str], presented: str
) -> None:
    """A key of the wrong shape or over 200 characters is None before any database query."""
    assert await store.authenticate(presented) is None
    assert statements == []


async def test_database_holds_the_hash_not_the_key(
    store: SqlApiKeyStore, engine: AsyncEngine
) -> None:
    """The api_keys table stores the SHA-256 of the key and nothing that contains the key."""
    key, plaintext = await store.create(Role.ADMIN)
    async with engine.connect() as conn:
        rows = (await conn.execute(text("SELECT * FROM api_keys"))).mappings().all()
    assert len(rows) == 1
    row = rows[0]
    assert row["id"] == key.key_id
    assert row["role"] == "admin"
    assert row["key_hash"] == hashlib.sha256(plaintext.encode()).hexdigest() == hash_key(plaintext)
    assert row["revoked_at"] is None
    secret = plaintext.removeprefix("wrn_admin_")
    assert not any(secret in str(value) for value in row.values())


async def test_nothing_shows_the_key_or_hash_in_its_repr(
    store: SqlApiKeyStore, engine: AsyncEngine, clock: Clock
) -> None:
    """repr of a key record, its row, a store and a cache that has served the key never shows
    the secret or its hash."""
    key, plaintext = await store.create(Role.ADMIN)
    cached = CachedApiKeyStore(store, ttl=TTL, timer=clock.seconds)
    assert await cached.authenticate(plaintext) == key
    async with session_factory(engine)() as session:
        row = await session.get(ApiKeyRow, key.key_id)
    secret = plaintext.removeprefix("wrn_admin_")
    for shown in (repr(key), repr(row), repr(store), repr(cached), str(key)):
        assert secret not in shown
        assert hash_key(plaintext) not in shown


async def test_revoked_key_stops_authenticating(store: SqlApiKeyStore) -> None:
    """After revoke the key is None, not listed and not counted; other keys are unaffected."""
    revoked, revoked_plaintext = await store.create(Role.AGENT)
    kept, kept_plaintext = await store.create(Role.AGENT)
    assert await store.count_active(Role.AGENT) == 2
    await store.revoke(revoked.key_id)
    assert await store.authenticate(revoked_plaintext) is None
    assert await store.authenticate(kept_plaintext) == kept
    assert await store.list() == [kept]
    assert await store.count_active(Role.AGENT) == 1


async def test_revoke_is_idempotent_and_stamps_the_time(
    store: SqlApiKeyStore, engine: AsyncEngine, clock: Clock
) -> None:
    """Revoking twice is a no-op the second time; revoked_at keeps the first revocation's time."""
    key, _ = await store.create(Role.AGENT)
    clock.advance(timedelta(minutes=1))
    revoked_at = clock()
    await store.revoke(key.key_id)
    clock.advance(timedelta(minutes=1))
    await store.revoke(key.key_id)
    async with engine.connect() as conn:
        stored = (await conn.execute(select(ApiKeyRow.revoked_at))).scalar_one()
    assert stored == revoked_at


async def test_revoke_unknown_id_is_not_found(store: SqlApiKeyStore) -> None:
    """Revoking an id that does not exist raises NotFound (404)."""
    with pytest.raises(NotFound) as caught:
        await store.revoke("0123456789ab")
    assert caught.value.status == 404


async def test_revoke_never_echoes_a_pasted_secret(store: SqlApiKeyStore) -> None:
    """Passing a whole key where an id belongs raises NotFound without quoting the key."""
    _, plaintext = await store.create(Role.ADMIN)
    with pytest.raises(NotFound) as caught:
        await store.revoke(plaintext)
    assert plaintext not in str(caught.value)
    assert plaintext.removeprefix("wrn_admin_") not in caught.value.message
    assert await store.authenticate(plaintext) is not None


async def test_list_and_count_per_role(store: SqlApiKeyStore, clock: Clock) -> None:
    """list returns active keys oldest first; count_active counts each role separately."""
    assert await store.list() == []
    assert await store.count_active(Role.ADMIN) == 0
    first, _ = await store.create(Role.AGENT)
    clock.advance(timedelta(seconds=1))
    second, _ = await store.create(Role.ADMIN)
    clock.advance(timedelta(seconds=1))
    third, _ = await store.create(Role.AGENT)
    assert await store.list() == [first, second, third]
    assert await store.count_active(Role.ADMIN) == 1
    assert await store.count_active(Role.AGENT) == 2


class CountingApiKeyStore:
    """An ApiKeyStore that forwards to a real one and counts `authenticate` calls."""

    def __init__(self, inner: ApiKeyStore) -> None:
        self.inner = inner
        self.authentications = 0

    async def create(self, role: Role) -> tuple[ApiKey, str]:
        return await self.inner.create(role)

    async def authenticate(self, presented: str) -> ApiKey | None:
        self.authentications += 1
        return await self.inner.authenticate(presented)

    async def list(self) -> builtins.list[ApiKey]:
        return await self.inner.list()

    async def revoke(self, key_id: str) -> None:
        await self.inner.revoke(key_id)

    async def count_active(self, role: Role) -> int:
        return await self.inner.count_active(role)


def _conforms(engine: AsyncEngine, clock: Clock) -> list[ApiKeyStore]:
    """Type-checked only: mypy fails here if a store drifts from the ApiKeyStore protocol."""
    sql = SqlApiKeyStore(engine, clock)
    return [sql, CachedApiKeyStore(sql, TTL, timer=clock.seconds), CountingApiKeyStore(sql)]


@pytest.fixture
def counting(store: SqlApiKeyStore) -> CountingApiKeyStore:
    """The SQL store behind a call counter."""
    return CountingApiKeyStore(store)


@pytest.fixture
def cached(counting: CountingApiKeyStore, clock: Clock) -> CachedApiKeyStore:
    """A 2 s authentication cache on the fake clock in front of the counted SQL store."""
    return CachedApiKeyStore(counting, ttl=TTL, timer=clock.seconds)


async def test_cache_answers_repeat_authentications(
    cached: CachedApiKeyStore, counting: CountingApiKeyStore
) -> None:
    """Within the TTL a key authenticates from memory after the first lookup."""
    key, plaintext = await cached.create(Role.AGENT)
    for _ in range(10):
        assert await cached.authenticate(plaintext) == key
    assert counting.authentications == 1


async def test_cache_does_not_remember_failures(
    cached: CachedApiKeyStore, counting: CountingApiKeyStore
) -> None:
    """Unknown keys reach the inner store every time; malformed ones never do."""
    for _ in range(3):
        assert await cached.authenticate(_other_key()) is None
    assert counting.authentications == 3
    assert await cached.authenticate("not-a-key") is None
    assert counting.authentications == 3


async def test_revoke_through_the_cache_takes_effect_at_once(
    cached: CachedApiKeyStore,
) -> None:
    """Revoking through the cache makes the key fail on the very next request."""
    key, plaintext = await cached.create(Role.ADMIN)
    assert await cached.authenticate(plaintext) == key
    await cached.revoke(key.key_id)
    assert await cached.authenticate(plaintext) is None
    assert await cached.list() == []
    assert await cached.count_active(Role.ADMIN) == 0


async def test_revoke_elsewhere_takes_effect_after_the_ttl(
    cached: CachedApiKeyStore, store: SqlApiKeyStore, clock: Clock
) -> None:
    """A key revoked by another process keeps working here for at most the TTL."""
    key, plaintext = await cached.create(Role.AGENT)
    assert await cached.authenticate(plaintext) == key
    await store.revoke(key.key_id)  # not through the cache: another replica
    clock.advance(TTL - timedelta(milliseconds=1))
    assert await cached.authenticate(plaintext) == key
    clock.advance(timedelta(milliseconds=1))
    assert await cached.authenticate(plaintext) is None


async def test_cache_revoke_of_unknown_id_is_not_found(cached: CachedApiKeyStore) -> None:
    """Revoking an unknown id through the cache raises NotFound like the store does."""
    with pytest.raises(NotFound):
        await cached.revoke("0123456789ab")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _names(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


async def test_bootstrap_writes_one_private_key_file_per_role(
    store: SqlApiKeyStore, data_dir: Path
) -> None:
    """First run writes <data_dir>/<role>.key, mode 0600, holding a key of that role."""
    paths = await ensure_bootstrap_keys(store, data_dir)
    assert paths == {role: data_dir / f"{role.value}.key" for role in Role}
    for role, path in paths.items():
        assert _mode(path) == 0o600
        content = path.read_text()
        assert content == content.strip()
        key = await store.authenticate(content)
        assert key is not None
        assert key.role is role
        assert await store.count_active(role) == 1
    assert _names(data_dir) == ["admin.key", "agent.key"]


async def test_bootstrap_is_idempotent(store: SqlApiKeyStore, data_dir: Path) -> None:
    """Later runs create no keys and leave the files as they were."""
    first = await ensure_bootstrap_keys(store, data_dir)
    contents = {role: path.read_text() for role, path in first.items()}
    keys = await store.list()
    for _ in range(2):
        assert await ensure_bootstrap_keys(store, data_dir) == first
    assert {role: path.read_text() for role, path in first.items()} == contents
    assert await store.list() == keys


async def test_bootstrap_does_not_replace_a_deleted_file(
    store: SqlApiKeyStore, data_dir: Path
) -> None:
    """With an active key but no file, bootstrap still returns the path and writes nothing."""
    paths = await ensure_bootstrap_keys(store, data_dir)
    paths[Role.ADMIN].unlink()
    assert await ensure_bootstrap_keys(store, data_dir) == paths
    assert not paths[Role.ADMIN].exists()
    assert await store.count_active(Role.ADMIN) == 1


async def test_bootstrap_replaces_a_role_whose_keys_were_all_revoked(
    store: SqlApiKeyStore, data_dir: Path
) -> None:
    """When a role has no active key left, bootstrap issues a new one and rewrites its file."""
    paths = await ensure_bootstrap_keys(store, data_dir)
    old = paths[Role.AGENT].read_text()
    for key in await store.list():
        if key.role is Role.AGENT:
            await store.revoke(key.key_id)
    await ensure_bootstrap_keys(store, data_dir)
    new = paths[Role.AGENT].read_text()
    assert new != old
    assert _mode(paths[Role.AGENT]) == 0o600
    assert await store.authenticate(old) is None
    assert await store.authenticate(new) is not None


async def test_bootstrap_creates_a_private_data_directory(
    store: SqlApiKeyStore, data_dir: Path
) -> None:
    """A missing data directory is created 0700 and holds only the key files afterwards."""
    nested = data_dir / "fresh"
    await ensure_bootstrap_keys(store, nested)
    assert _mode(nested) == 0o700
    assert _names(nested) == ["admin.key", "agent.key"]


async def test_bootstrap_revokes_the_key_when_the_file_cannot_be_written(
    store: SqlApiKeyStore, data_dir: Path
) -> None:
    """If the key file cannot be written the new key is revoked, so the next run tries again."""
    (data_dir / "admin.key").mkdir()  # a directory where the file should go: replace fails
    with pytest.raises(OSError, match=r"admin\.key"):
        await ensure_bootstrap_keys(store, data_dir)
    assert await store.count_active(Role.ADMIN) == 0
    assert _names(data_dir) == ["admin.key"]
    (data_dir / "admin.key").rmdir()
    paths = await ensure_bootstrap_keys(store, data_dir)
    assert await store.authenticate(paths[Role.ADMIN].read_text()) is not None
