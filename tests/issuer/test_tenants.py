"""Tenants: the slug rule, the SQL store on SQLite and PostgreSQL, and the read cache."""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from issuer.db import create_engine
from issuer.errors import BadRequest, InvalidSlug, TenantExists, Unavailable, UnknownTenant
from issuer.tenants import (
    SLUG_RULE,
    CachedTenantStore,
    SqlTenantStore,
    Tenant,
    TenantStore,
    audience_for,
    validate_slug,
)
from tests.issuer.conftest import Clock

TTL = timedelta(seconds=5)


@pytest.mark.parametrize(
    "slug",
    ["ab", "a1", "00", "acme", "acme-prod", "a-b-c", "a--b", "x" * 63, "a" + "-" * 61 + "z"],
)
def test_valid_slugs_are_accepted(slug: str) -> None:
    """Lowercase letters, digits and inner hyphens, 2 to 63 characters, pass unchanged."""
    assert validate_slug(slug) == slug


@pytest.mark.parametrize(
    "slug",
    [
        "A",
        "a",
        "",
        "Acme",
        "-ab",
        "ab-",
        "-",
        "--",
        "x" * 64,
        "a_b",
        "a b",
        "a.b",
        "ab\n",
        "\nab",
        "tenänt",
        "a\u0661",  # an Arabic-Indic digit: a digit to Unicode, not to the rule
        "ａｂ",  # noqa: RUF001 - fullwidth letters look like "ab"
        None,
        42,
        b"ab",
        ["ab"],
    ],
)
def test_invalid_slugs_are_refused_with_value_and_rule(slug: object) -> None:
    """Anything outside the rule raises InvalidSlug quoting the value and stating the rule."""
    with pytest.raises(InvalidSlug) as caught:
        validate_slug(slug)
    assert repr(slug) in caught.value.message
    assert SLUG_RULE in caught.value.message
    assert caught.value.status == 400


def test_invalid_slug_message_truncates_long_values() -> None:
    """A huge bad value is quoted truncated to 80 characters, not echoed whole."""
    with pytest.raises(InvalidSlug) as caught:
        validate_slug("Z" * 10_000)
    quoted = caught.value.message.removeprefix("invalid tenant slug ").split(":")[0]
    assert len(quoted) == 80
    assert quoted.endswith("...")


def test_audience_is_slug_with_suffix_and_fits_iam() -> None:
    """The audience is '<slug>-oidc-service' and stays within IAM's 255-character client ID."""
    assert audience_for("acme") == "acme-oidc-service"
    assert len(audience_for("x" * 63)) <= 255
    with pytest.raises(InvalidSlug):
        audience_for("Acme")


@pytest.fixture
def store(engine: AsyncEngine, clock: Clock) -> SqlTenantStore:
    """The SQL tenant store on a fresh database."""
    return SqlTenantStore(engine, clock)


async def test_add_then_get_returns_the_same_tenant(store: SqlTenantStore, clock: Clock) -> None:
    """An added tenant reads back equal, with its name and the clock's time."""
    added = await store.add("acme", "Acme Corp")
    assert added == Tenant(slug="acme", name="Acme Corp", created_at=clock())
    assert await store.get("acme") == added


async def test_name_defaults_to_slug(store: SqlTenantStore) -> None:
    """A tenant added without a name is named after its slug."""
    assert (await store.add("acme")).name == "acme"
    assert (await store.get("acme")).name == "acme"


@pytest.mark.parametrize("name", ["", "   ", "x" * 201, "tab\there", "line\nbreak", "nul\x00"])
async def test_bad_names_are_refused(store: SqlTenantStore, name: str) -> None:
    """Empty, blank, over-200-character or unprintable names raise BadRequest and add nothing."""
    with pytest.raises(BadRequest) as caught:
        await store.add("acme", name)
    assert "200 printable characters" in caught.value.message
    assert await store.list() == []


async def test_longest_unicode_name_is_stored_intact(store: SqlTenantStore) -> None:
    """A printable 200-character name, non-ASCII included, round-trips unchanged."""
    prefix = "Bäckerei Müller — 東京 "
    name = prefix + "é" * (200 - len(prefix))
    await store.add("baeckerei", name)
    assert (await store.get("baeckerei")).name == name


async def test_timestamps_are_aware_utc(engine: AsyncEngine, clock: Clock) -> None:
    """created_at comes back timezone-aware UTC, the same instant and microseconds as the clock's
    (which here runs at UTC+2)."""
    start = datetime(2026, 3, 1, 14, 30, 5, 123456, tzinfo=timezone(timedelta(hours=2)))
    clock.now = start
    store = SqlTenantStore(engine, clock)
    added = await store.add("acme")
    fetched = await store.get("acme")
    for tenant in (added, fetched, (await store.list())[0]):
        assert tenant.created_at.tzinfo is UTC
        assert tenant.created_at == start
    assert fetched.created_at == datetime(2026, 3, 1, 12, 30, 5, 123456, tzinfo=UTC)


async def test_duplicate_slug_is_tenant_exists(store: SqlTenantStore) -> None:
    """Adding a slug that exists raises TenantExists and keeps the first tenant."""
    await store.add("acme", "First")
    with pytest.raises(TenantExists) as caught:
        await store.add("acme", "Second")
    assert caught.value.status == 409
    assert (await store.get("acme")).name == "First"


async def test_concurrent_adds_of_one_slug_let_exactly_one_win(store: SqlTenantStore) -> None:
    """Five simultaneous adds of the same slug: one succeeds, the others raise TenantExists."""
    results = await asyncio.gather(
        *(store.add("acme", f"Attempt {n}") for n in range(5)), return_exceptions=True
    )
    winners = [r for r in results if isinstance(r, Tenant)]
    losers = [r for r in results if isinstance(r, TenantExists)]
    assert len(winners) == 1
    assert len(losers) == 4
    assert await store.get("acme") == winners[0]


async def test_unknown_tenant(store: SqlTenantStore) -> None:
    """Getting or removing a slug nobody added raises UnknownTenant (404)."""
    with pytest.raises(UnknownTenant) as caught:
        await store.get("ghost")
    assert caught.value.status == 404
    with pytest.raises(UnknownTenant):
        await store.remove("ghost")


async def test_every_method_checks_the_slug_first(store: SqlTenantStore) -> None:
    """add, get and remove refuse an invalid slug with InvalidSlug."""
    with pytest.raises(InvalidSlug):
        await store.add("Bad_Slug")
    with pytest.raises(InvalidSlug):
        await store.get("Bad_Slug")
    with pytest.raises(InvalidSlug):
        await store.remove("Bad_Slug")


async def test_list_is_sorted_by_slug_in_code_point_order(store: SqlTenantStore) -> None:
    """list returns every tenant ordered by slug code points, identically on both backends."""
    assert await store.list() == []
    for slug in ["ab", "zz", "a-c", "a1", "00"]:
        await store.add(slug)
    assert [t.slug for t in await store.list()] == ["00", "a-c", "a1", "ab", "zz"]


async def test_remove_deletes_the_tenant(store: SqlTenantStore) -> None:
    """A removed tenant is gone and its slug can be added again."""
    await store.add("acme")
    await store.add("other")
    await store.remove("acme")
    with pytest.raises(UnknownTenant):
        await store.get("acme")
    assert [t.slug for t in await store.list()] == ["other"]
    await store.add("acme")


@pytest.fixture
async def unreachable_store(clock: Clock) -> AsyncIterator[SqlTenantStore]:
    """A SQL tenant store whose PostgreSQL cannot be reached."""
    engine = create_engine("postgresql+asyncpg://postgres@127.0.0.1:1/warrant")
    yield SqlTenantStore(engine, clock)
    await engine.dispose()


async def test_unreachable_database_is_unavailable(unreachable_store: SqlTenantStore) -> None:
    """Every operation on an unreachable database raises Unavailable (503)."""
    with pytest.raises(Unavailable):
        await unreachable_store.get("acme")
    with pytest.raises(Unavailable):
        await unreachable_store.add("acme")
    with pytest.raises(Unavailable):
        await unreachable_store.list()
    with pytest.raises(Unavailable):
        await unreachable_store.remove("acme")


class CountingTenantStore:
    """An in-memory TenantStore that counts calls to `get` and can hold one `get` mid-flight."""

    def __init__(self, clock: Clock) -> None:
        self.tenants: dict[str, Tenant] = {}
        self.gets = 0
        self.hold: asyncio.Event | None = None
        self.holding = asyncio.Event()
        self._clock = clock

    async def add(self, slug: str, name: str | None = None) -> Tenant:
        slug = validate_slug(slug)
        if slug in self.tenants:
            raise TenantExists(slug)
        tenant = Tenant(slug=slug, name=name or slug, created_at=self._clock())
        self.tenants[slug] = tenant
        return tenant

    async def get(self, slug: str) -> Tenant:
        self.gets += 1
        tenant = self.tenants.get(slug)
        if self.hold is not None:
            self.holding.set()
            await self.hold.wait()
        if tenant is None:
            raise UnknownTenant(slug)
        return tenant

    async def list(self) -> builtins.list[Tenant]:
        return sorted(self.tenants.values(), key=lambda tenant: tenant.slug)

    async def remove(self, slug: str) -> None:
        if self.tenants.pop(slug, None) is None:
            raise UnknownTenant(slug)


@pytest.fixture
def inner(clock: Clock) -> CountingTenantStore:
    """The counting in-memory store the cache sits in front of."""
    return CountingTenantStore(clock)


@pytest.fixture
def cached(inner: CountingTenantStore, clock: Clock) -> CachedTenantStore:
    """A cache with a 5 s TTL on the fake clock."""
    return CachedTenantStore(inner, ttl=TTL, timer=clock.seconds)


def _conforms(engine: AsyncEngine, clock: Clock) -> list[TenantStore]:
    """Type-checked only: mypy fails here if a store drifts from the TenantStore protocol."""
    inner = CountingTenantStore(clock)
    return [
        SqlTenantStore(engine, clock),
        CachedTenantStore(inner, TTL, timer=clock.seconds),
        inner,
    ]


async def test_cache_hits_do_not_reach_the_inner_store(
    inner: CountingTenantStore, cached: CachedTenantStore
) -> None:
    """Repeated gets within the TTL are answered from memory after the first."""
    await inner.add("acme")
    for _ in range(10):
        assert (await cached.get("acme")).slug == "acme"
    assert inner.gets == 1


async def test_cache_entries_expire_after_the_ttl(
    inner: CountingTenantStore, cached: CachedTenantStore, clock: Clock
) -> None:
    """A tenant removed elsewhere stays gettable until the TTL passes, then is unknown."""
    await inner.add("acme")
    await cached.get("acme")
    await inner.remove("acme")  # another process removes it
    clock.advance(TTL - timedelta(milliseconds=1))
    assert (await cached.get("acme")).slug == "acme"
    assert inner.gets == 1
    clock.advance(timedelta(milliseconds=1))
    with pytest.raises(UnknownTenant):
        await cached.get("acme")
    assert inner.gets == 2


async def test_remove_through_the_cache_invalidates_at_once(
    inner: CountingTenantStore, cached: CachedTenantStore
) -> None:
    """Removing through the cache makes the next get unknown without waiting for the TTL."""
    await cached.add("acme")
    await cached.get("acme")
    await cached.remove("acme")
    with pytest.raises(UnknownTenant):
        await cached.get("acme")
    assert inner.gets == 2


async def test_add_through_the_cache_replaces_a_stale_entry(
    inner: CountingTenantStore, cached: CachedTenantStore
) -> None:
    """Adding through the cache drops its entry, so a re-added tenant is read fresh."""
    await inner.add("acme", "Old")
    assert (await cached.get("acme")).name == "Old"
    await inner.remove("acme")  # removed elsewhere, still cached here
    await cached.add("acme", "New")
    assert (await cached.get("acme")).name == "New"


async def test_misses_are_not_cached(inner: CountingTenantStore, cached: CachedTenantStore) -> None:
    """An unknown slug reaches the inner store every time, so a tenant added elsewhere shows."""
    for _ in range(3):
        with pytest.raises(UnknownTenant):
            await cached.get("acme")
    assert inner.gets == 3
    await inner.add("acme")  # another process adds it
    assert (await cached.get("acme")).slug == "acme"


async def test_get_in_flight_during_remove_does_not_cache_the_removed_tenant(
    inner: CountingTenantStore, cached: CachedTenantStore
) -> None:
    """A read that started before a remove through the cache cannot re-cache the removed tenant."""
    await inner.add("acme")
    inner.hold = asyncio.Event()
    reading = asyncio.create_task(cached.get("acme"))
    await inner.holding.wait()
    await cached.remove("acme")
    inner.hold.set()
    assert (await reading).slug == "acme"  # it read before the remove
    inner.hold = None
    with pytest.raises(UnknownTenant):
        await cached.get("acme")


async def test_cache_checks_the_slug_and_passes_list_through(
    inner: CountingTenantStore, cached: CachedTenantStore
) -> None:
    """The cache refuses invalid slugs itself and lists what the inner store holds."""
    with pytest.raises(InvalidSlug):
        await cached.get("NOPE")
    assert inner.gets == 0
    await cached.add("bb")
    await cached.add("a0")
    assert [t.slug for t in await cached.list()] == ["a0", "bb"]


async def test_cache_over_sql_store(engine: AsyncEngine, clock: Clock) -> None:
    """The cache composes with the SQL store on both backends."""
    cached = CachedTenantStore(SqlTenantStore(engine, clock), ttl=TTL, timer=clock.seconds)
    added = await cached.add("acme", "Acme")
    assert await cached.get("acme") == added
    assert await cached.list() == [added]
    await cached.remove("acme")
    with pytest.raises(UnknownTenant):
        await cached.get("acme")
    assert "CachedTenantStore" in repr(cached)
