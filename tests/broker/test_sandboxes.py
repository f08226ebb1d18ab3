"""Sandboxes on SQLite and PostgreSQL: creation with a once-shown bearer token stored hashed,
authentication that cannot tell unknown from revoked or expired, revocation, and the
authentication cache of the vend hot path."""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import re
from collections.abc import Iterator
from datetime import UTC, timedelta
from typing import Any

import pytest
from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncEngine

from broker.integrations import SqlIntegrationStore
from broker.model import Delivery, Integration, Sandbox
from broker.sandboxes import (
    CachedSandboxAuth,
    SandboxAuth,
    SandboxRow,
    SandboxStore,
    SqlSandboxStore,
    hash_token,
)
from issuer.db import session_factory
from issuer.errors import BadRequest, NotFound
from issuer.tenants import SqlTenantStore
from tests.broker.conftest import FLOOR_SECONDS
from tests.issuer.conftest import Clock

ACCOUNT = "123456789012"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/warrant"
HOUR = timedelta(hours=1)
TOKEN_FORMAT = re.compile(r"wsb_[A-Za-z0-9_-]{43}")
POLICY = '{"Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}]}'
CACHE_TTL = timedelta(seconds=5)


@pytest.fixture
def store(engine: AsyncEngine, clock: Clock) -> SqlSandboxStore:
    """The SQL sandbox store on a fresh database."""
    return SqlSandboxStore(engine, clock)


@pytest.fixture
async def integration(engine: AsyncEngine, clock: Clock, acme: str) -> Integration:
    """An OIDC integration 'prod' of tenant acme."""
    integrations = SqlIntegrationStore(engine, clock, floor_seconds=FLOOR_SECONDS)
    return await integrations.add(acme, name="prod", account_id=ACCOUNT, role_arn=ROLE)


@pytest.fixture
def statements(engine: AsyncEngine) -> Iterator[list[str]]:
    """Every SQL statement the engine sends, in order."""
    sent: list[str] = []

    def record(*args: Any) -> None:
        sent.append(args[2])

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    yield sent
    event.remove(engine.sync_engine, "before_cursor_execute", record)


async def _create(
    store: SqlSandboxStore,
    integration: Integration,
    delivery: Delivery = Delivery.CONTAINER,
    ttl: timedelta = HOUR,
    policy: str | None = None,
) -> tuple[Sandbox, str | None]:
    return await store.create(
        tenant=integration.tenant,
        integration_id=integration.id,
        delivery=delivery,
        ttl=ttl,
        session_policy=policy,
    )


async def test_container_sandbox_token_authenticates(
    store: SqlSandboxStore, integration: Integration, clock: Clock
) -> None:
    """A container sandbox comes with a wsb_ token of 256 random bits that authenticates as it."""
    sandbox, token = await _create(store, integration, policy=POLICY)
    assert token is not None
    assert TOKEN_FORMAT.fullmatch(token)
    assert re.fullmatch(r"sbx_[0-9a-f]{20}", sandbox.id)
    assert sandbox == Sandbox(
        id=sandbox.id,
        tenant="acme",
        integration_id=integration.id,
        delivery=Delivery.CONTAINER,
        created_at=clock(),
        expires_at=clock() + HOUR,
        session_policy=POLICY,
    )
    assert await store.authenticate(token) == sandbox
    assert await store.get(sandbox.id) == sandbox
    assert sandbox.created_at.tzinfo is UTC


async def test_tokens_and_ids_are_unique(store: SqlSandboxStore, integration: Integration) -> None:
    """Every sandbox gets its own id and token."""
    created = [await _create(store, integration) for _ in range(5)]
    assert len({sandbox.id for sandbox, _ in created}) == 5
    assert len({token for _, token in created}) == 5


async def test_env_sandbox_has_no_token(
    store: SqlSandboxStore, integration: Integration, engine: AsyncEngine
) -> None:
    """An env-delivery sandbox has no bearer token, stores none, and is still live."""
    sandbox, token = await _create(store, integration, Delivery.ENV)
    assert token is None
    assert sandbox.delivery is Delivery.ENV
    async with session_factory(engine)() as session:
        assert await session.scalar(select(SandboxRow.token_hash)) is None
    assert await store.list_live() == [sandbox]


async def test_token_is_stored_only_as_its_sha256(
    store: SqlSandboxStore, integration: Integration, engine: AsyncEngine
) -> None:
    """The table holds the token's SHA-256 hex and no column holds the token itself."""
    _, token = await _create(store, integration)
    assert token is not None
    async with session_factory(engine)() as session:
        row = (await session.execute(select(SandboxRow.__table__))).one()
    assert row.token_hash == hashlib.sha256(token.encode()).hexdigest() == hash_token(token)
    secret = token.removeprefix("wsb_")
    assert not any(secret in str(value) for value in row)


async def test_revoked_sandbox_does_not_authenticate(
    store: SqlSandboxStore, integration: Integration, clock: Clock
) -> None:
    """After revocation the token authenticates no more; revoking again keeps the first time."""
    sandbox, token = await _create(store, integration)
    assert token is not None
    first = clock()
    revoked = await store.revoke(sandbox.id)
    assert revoked.revoked_at == first
    assert await store.authenticate(token) is None
    clock.advance(timedelta(minutes=1))
    assert (await store.revoke(sandbox.id)).revoked_at == first
    assert (await store.get(sandbox.id)).revoked_at == first


async def test_expiry_is_exact(
    store: SqlSandboxStore, integration: Integration, clock: Clock
) -> None:
    """A token works until the microsecond before expires_at and not at it."""
    _, token = await _create(store, integration)
    assert token is not None
    clock.advance(HOUR - timedelta(microseconds=1))
    assert await store.authenticate(token) is not None
    clock.advance(timedelta(microseconds=1))
    assert await store.authenticate(token) is None


async def test_unknown_token_is_none(store: SqlSandboxStore, integration: Integration) -> None:
    """A well-formed token nobody was given authenticates as nothing."""
    await _create(store, integration)
    assert await store.authenticate("wsb_" + "A" * 43) is None


MALFORMED_TOKENS: list[object] = [
    "",
    "wsb_",
    "wsb_" + "A" * 42,
    "wsb_" + "A" * 44,
    "wrn_" + "A" * 43,
    "WSB_" + "A" * 43,
    "wsb_" + "A" * 42 + "=",
    "wsb_" + "A" * 42 + "\x00",
    "Bearer wsb_" + "A" * 43,
    "wsb_" + "A" * 10_000,
    None,
]


async def test_malformed_tokens_are_none_without_a_query(
    store: SqlSandboxStore, statements: list[str]
) -> None:
    """A token of the wrong prefix, length or alphabet is refused before touching the database."""
    statements.clear()
    for token in MALFORMED_TOKENS:
        assert await store.authenticate(token) is None  # type: ignore[arg-type]
    assert statements == []


async def test_sandbox_needs_the_tenants_own_integration(
    store: SqlSandboxStore, integration: Integration, tenants: SqlTenantStore
) -> None:
    """Another tenant cannot attach a sandbox to this integration, and an unknown integration is
    NotFound too; nothing is created."""
    await tenants.add("globex")
    for tenant, integration_id in [
        ("globex", integration.id),
        ("acme", "int_" + "0" * 16),
        ("acme", "prod"),
    ]:
        with pytest.raises(NotFound):
            await store.create(
                tenant=tenant,
                integration_id=integration_id,
                delivery=Delivery.CONTAINER,
                ttl=HOUR,
                session_policy=None,
            )
    assert await store.list_live() == []


# Each case: delivery, ttl, session policy, and words the error must contain.
INVALID_SANDBOXES: list[tuple[str, timedelta, str | None, str]] = [
    ("imds", HOUR, None, "'container' or 'env'"),
    (Delivery.ENV, timedelta(0), None, "positive"),
    (Delivery.ENV, -HOUR, None, "positive"),
    (Delivery.ENV, HOUR, '{"Version": "2012-10-17"}', "Statement"),
]


async def test_invalid_sandbox_refused(store: SqlSandboxStore, integration: Integration) -> None:
    """An unknown delivery, a non-positive ttl or an invalid policy is BadRequest, creating
    nothing."""
    for delivery, ttl, policy, words in INVALID_SANDBOXES:
        with pytest.raises(BadRequest, match=words):
            await _create(store, integration, delivery, ttl, policy)  # type: ignore[arg-type]
    assert await store.list_live() == []


async def test_get_and_revoke_of_unknown_or_foreign_sandbox(
    store: SqlSandboxStore, integration: Integration
) -> None:
    """Unknown ids are NotFound; with a tenant given, another tenant's sandbox is NotFound too and
    stays unrevoked; a malformed id (maybe a pasted token) is not echoed."""
    sandbox, _ = await _create(store, integration)
    with pytest.raises(NotFound, match="sbx_00000000000000000000"):
        await store.get("sbx_" + "0" * 20)
    with pytest.raises(NotFound, match="sbx_00000000000000000000"):
        await store.revoke("sbx_" + "0" * 20)
    with pytest.raises(NotFound):
        await store.get(sandbox.id, tenant="globex")
    with pytest.raises(NotFound):
        await store.revoke(sandbox.id, tenant="globex")
    assert (await store.get(sandbox.id, tenant="acme")).revoked_at is None
    pasted = "wsb_" + "S" * 43
    for operation in (store.get, store.revoke):
        with pytest.raises(NotFound) as caught:
            await operation(pasted)
        assert "S" * 10 not in caught.value.message


async def test_revoke_for_integration(
    store: SqlSandboxStore,
    integration: Integration,
    engine: AsyncEngine,
    clock: Clock,
) -> None:
    """Revoking an integration's sandboxes revokes each unrevoked one, returns their ids sorted,
    and leaves other integrations' sandboxes alone."""
    integrations = SqlIntegrationStore(engine, clock, floor_seconds=FLOOR_SECONDS)
    other = await integrations.add("acme", name="other", account_id=ACCOUNT, role_arn=ROLE)
    mine = [(await _create(store, integration, delivery))[0] for delivery in Delivery]
    already, _ = await _create(store, integration)
    await store.revoke(already.id)
    kept, kept_token = await _create(store, other)
    revoked = await store.revoke_for_integration(integration.id)
    assert revoked == sorted(sandbox.id for sandbox in mine)
    assert await store.list_live() == [kept]
    assert kept_token is not None
    assert await store.authenticate(kept_token) == kept
    assert await store.revoke_for_integration(integration.id) == []


async def test_list_live_filters(
    store: SqlSandboxStore,
    integration: Integration,
    engine: AsyncEngine,
    clock: Clock,
    tenants: SqlTenantStore,
) -> None:
    """list_live omits revoked and expired sandboxes, lists oldest first, and filters by
    integration and by tenant."""
    await tenants.add("globex")
    integrations = SqlIntegrationStore(engine, clock, floor_seconds=FLOOR_SECONDS)
    theirs = await integrations.add("globex", name="p", account_id=ACCOUNT, role_arn=ROLE)
    short, _ = await _create(store, integration, ttl=timedelta(minutes=1))
    clock.advance(timedelta(seconds=1))
    first, _ = await _create(store, integration)
    revoked, _ = await _create(store, integration)
    await store.revoke(revoked.id)
    clock.advance(timedelta(seconds=1))
    foreign, _ = await _create(store, theirs)
    assert await store.list_live() == [short, first, foreign]
    clock.advance(timedelta(minutes=1))
    assert await store.list_live() == [first, foreign]
    assert await store.list_live(integration.id) == [first]
    assert await store.list_live(tenant="globex") == [foreign]
    assert await store.list_live(integration.id, tenant="globex") == []


def _conforms(engine: AsyncEngine, clock: Clock) -> builtins.list[SandboxAuth]:
    """Type-checked only: the SQL store is a SandboxStore, and both it and the cache are
    SandboxAuth."""
    sql: SandboxStore = SqlSandboxStore(engine, clock)
    return [sql, CachedSandboxAuth(sql, CACHE_TTL, clock, timer=clock.seconds)]


def test_implementations_satisfy_the_protocols(engine: AsyncEngine, clock: Clock) -> None:
    """Both implementations are SandboxAuth (checked by mypy; built here)."""
    assert len(_conforms(engine, clock)) == 2


# The authentication cache, against a counting in-memory fake and against the SQL store.


class CountingAuth:
    """A SandboxAuth fake that knows some tokens and counts every call."""

    def __init__(self) -> None:
        self.tokens: dict[str, Sandbox] = {}
        self.calls = 0
        self.gate: asyncio.Event | None = None  # when set, calls wait for it

    async def authenticate(self, token: str) -> Sandbox | None:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        return self.tokens.get(token)


def _sandbox(clock: Clock, number: int = 1, ttl: timedelta = HOUR) -> Sandbox:
    return Sandbox(
        id=f"sbx_{number:020x}",
        tenant="acme",
        integration_id="int_" + "1" * 16,
        delivery=Delivery.CONTAINER,
        created_at=clock(),
        expires_at=clock() + ttl,
    )


def _token(number: int = 1) -> str:
    return "wsb_" + f"{number:043d}"


@pytest.fixture
def inner() -> CountingAuth:
    """The counting fake behind the cache."""
    return CountingAuth()


@pytest.fixture
def cached(inner: CountingAuth, clock: Clock) -> CachedSandboxAuth:
    """The cache under test, with a 5-second TTL on the fake clock."""
    return CachedSandboxAuth(inner, CACHE_TTL, clock, timer=clock.seconds)


async def test_cache_hits_do_not_reach_the_store(
    inner: CountingAuth, cached: CachedSandboxAuth, clock: Clock
) -> None:
    """Repeated authentications of one token ask the inner store once within the TTL."""
    inner.tokens[_token()] = _sandbox(clock)
    for _ in range(100):
        assert await cached.authenticate(_token()) == inner.tokens[_token()]
    assert inner.calls == 1


async def test_cache_entries_live_for_the_ttl(
    inner: CountingAuth, cached: CachedSandboxAuth, clock: Clock
) -> None:
    """Once the TTL has passed the cache asks the inner store again (so another process's
    revocation shows within the TTL)."""
    inner.tokens[_token()] = _sandbox(clock)
    await cached.authenticate(_token())
    clock.advance(CACHE_TTL - timedelta(microseconds=1))
    await cached.authenticate(_token())
    assert inner.calls == 1
    del inner.tokens[_token()]  # revoked elsewhere
    clock.advance(timedelta(microseconds=1))
    assert await cached.authenticate(_token()) is None
    assert inner.calls == 2


async def test_a_wall_clock_step_back_does_not_keep_an_entry(
    inner: CountingAuth, clock: Clock
) -> None:
    """Entries age on the monotonic clock by default: the wall clock stepping back an hour (a
    bad NTP correction) does not keep a revoked-elsewhere sandbox authenticating past the TTL."""
    cached = CachedSandboxAuth(inner, timedelta(milliseconds=200), clock)
    inner.tokens[_token()] = _sandbox(clock)
    await cached.authenticate(_token())
    clock.advance(-timedelta(hours=1))
    del inner.tokens[_token()]  # revoked elsewhere
    await asyncio.sleep(0.25)
    assert await cached.authenticate(_token()) is None
    assert inner.calls == 2


async def test_cached_sandbox_expires_exactly(inner: CountingAuth, clock: Clock) -> None:
    """A cached sandbox stops authenticating at its expires_at even while its entry is fresh."""
    cached = CachedSandboxAuth(inner, timedelta(hours=1), clock, timer=clock.seconds)
    inner.tokens[_token()] = _sandbox(clock, ttl=timedelta(seconds=30))
    await cached.authenticate(_token())
    clock.advance(timedelta(seconds=30) - timedelta(microseconds=1))
    assert await cached.authenticate(_token()) is not None
    clock.advance(timedelta(microseconds=1))
    assert await cached.authenticate(_token()) is None
    assert inner.calls == 1


async def test_invalidate_is_immediate(
    inner: CountingAuth, cached: CachedSandboxAuth, clock: Clock
) -> None:
    """After invalidate the sandbox's token is asked of the inner store again; other sandboxes stay
    cached."""
    for number in (1, 2):
        inner.tokens[_token(number)] = _sandbox(clock, number)
        await cached.authenticate(_token(number))
    del inner.tokens[_token(1)]
    cached.invalidate(_sandbox(clock, 1).id)
    cached.invalidate("sbx_" + "f" * 20)  # unknown: a no-op
    assert await cached.authenticate(_token(1)) is None
    assert await cached.authenticate(_token(2)) is not None
    assert inner.calls == 3


async def test_invalidate_during_a_lookup_is_not_undone(
    inner: CountingAuth, cached: CachedSandboxAuth, clock: Clock
) -> None:
    """A lookup that was in flight while its sandbox was invalidated does not cache its answer."""
    inner.tokens[_token()] = _sandbox(clock)
    inner.gate = asyncio.Event()
    lookup = asyncio.create_task(cached.authenticate(_token()))
    await asyncio.sleep(0)
    cached.invalidate(_sandbox(clock).id)
    inner.gate.set()
    assert await lookup is not None
    inner.gate = None
    await cached.authenticate(_token())
    assert inner.calls == 2


async def test_failures_are_not_cached(
    inner: CountingAuth, cached: CachedSandboxAuth, clock: Clock
) -> None:
    """An unknown token is asked each time, so a sandbox created a moment later works at once."""
    assert await cached.authenticate(_token()) is None
    inner.tokens[_token()] = _sandbox(clock)
    assert await cached.authenticate(_token()) is not None
    assert inner.calls == 2


@pytest.mark.parametrize("token", ["", "wsb_short", "wrn_" + "A" * 43, None])
async def test_cache_refuses_malformed_tokens_itself(
    inner: CountingAuth, cached: CachedSandboxAuth, token: object
) -> None:
    """Malformed tokens never reach the inner store."""
    assert await cached.authenticate(token) is None  # type: ignore[arg-type]
    assert inner.calls == 0


async def test_cache_keeps_no_plaintext_token(
    inner: CountingAuth, cached: CachedSandboxAuth, clock: Clock
) -> None:
    """The cache holds the token's hash, never the token."""
    inner.tokens[_token()] = _sandbox(clock)
    await cached.authenticate(_token())
    held = repr(vars(cached))
    assert hash_token(_token()) in held
    assert _token() not in held
    assert _token().removeprefix("wsb_") not in held
    assert len(cached) == 1


async def test_cache_bookkeeping_stays_bounded(inner: CountingAuth, clock: Clock) -> None:
    """Past its size the cache evicts, invalidation still finds every entry still held, and the
    bookkeeping stays bounded."""
    cached = CachedSandboxAuth(inner, CACHE_TTL, clock, maxsize=4, timer=clock.seconds)
    for number in range(1, 21):
        inner.tokens[_token(number)] = _sandbox(clock, number)
        await cached.authenticate(_token(number))
    assert len(cached) == 4
    assert len(vars(cached)["_digests"]) <= 8
    for number in range(17, 21):
        cached.invalidate(_sandbox(clock, number).id)
    assert len(cached) == 0


async def test_cache_over_the_sql_store(
    store: SqlSandboxStore,
    integration: Integration,
    clock: Clock,
    statements: list[str],
) -> None:
    """In front of the SQL store a hit sends no SQL; revoke plus invalidate ends access at once,
    while a revocation the cache was not told of shows after the TTL."""
    cached = CachedSandboxAuth(store, CACHE_TTL, clock, timer=clock.seconds)
    first, first_token = await _create(store, integration)
    second, second_token = await _create(store, integration)
    assert first_token is not None
    assert second_token is not None
    assert await cached.authenticate(first_token) == first
    assert await cached.authenticate(second_token) == second
    statements.clear()
    assert await cached.authenticate(first_token) == first
    assert statements == []
    await store.revoke(first.id)
    cached.invalidate(first.id)
    assert await cached.authenticate(first_token) is None
    assert statements  # the miss after invalidate asked the database
    await store.revoke(second.id)  # as if by another process: this cache is not told
    assert await cached.authenticate(second_token) == second
    clock.advance(CACHE_TTL)
    assert await cached.authenticate(second_token) is None
