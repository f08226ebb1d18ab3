"""Concurrent cache misses share one call to the store (no stampede when an entry expires)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from issuer.errors import UnknownTenant
from issuer.singleflight import SingleFlight
from issuer.tenants import CachedTenantStore, Tenant
from tests.conftest import FakeClock


class SlowTenants:
    """A TenantStore whose `get` is held until released, counting calls."""

    def __init__(self, clock: FakeClock) -> None:
        self.gets = 0
        self.release = asyncio.Event()
        self._tenant = Tenant("acme", "Acme", clock())

    async def get(self, slug: str) -> Tenant:
        self.gets += 1
        await self.release.wait()
        if slug != "acme":
            raise UnknownTenant(slug)
        return self._tenant

    async def add(self, slug: str, name: str | None = None) -> Tenant:
        raise NotImplementedError

    async def list(self) -> list[Tenant]:
        raise NotImplementedError

    async def remove(self, slug: str) -> None:
        raise NotImplementedError


async def test_concurrent_calls_share_one_flight() -> None:
    """Fifty concurrent calls for one key run the call once and all get its result."""
    flights: SingleFlight[str, int] = SingleFlight()
    calls = 0
    gate = asyncio.Event()

    async def call() -> int:
        nonlocal calls
        calls += 1
        await gate.wait()
        return 42

    waiters = [asyncio.create_task(flights.do("k", call)) for _ in range(50)]
    await asyncio.sleep(0)
    gate.set()
    assert await asyncio.gather(*waiters) == [42] * 50
    assert calls == 1
    assert len(flights) == 0


async def test_failures_reach_every_waiter_and_are_not_remembered() -> None:
    """A failing call fails every waiter; the next call runs anew."""
    flights: SingleFlight[str, int] = SingleFlight()

    async def boom() -> int:
        await asyncio.sleep(0)
        raise ValueError("nope")

    results = await asyncio.gather(
        *[flights.do("k", boom) for _ in range(5)], return_exceptions=True
    )
    assert all(isinstance(r, ValueError) for r in results)

    async def fine() -> int:
        return 1

    assert await flights.do("k", fine) == 1


async def test_a_cancelled_waiter_does_not_cancel_the_others() -> None:
    """Cancelling one caller leaves the shared call running for the rest."""
    flights: SingleFlight[str, int] = SingleFlight()
    gate = asyncio.Event()

    async def call() -> int:
        await gate.wait()
        return 7

    first = asyncio.create_task(flights.do("k", call))
    second = asyncio.create_task(flights.do("k", call))
    await asyncio.sleep(0)
    first.cancel()
    gate.set()
    assert await second == 7
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_tenant_cache_expiry_does_not_stampede(clock: FakeClock) -> None:
    """When a cached tenant expires, 32 concurrent lookups make one store query, not 32."""
    inner = SlowTenants(clock)
    cache = CachedTenantStore(inner, ttl=timedelta(seconds=5), timer=clock.seconds)
    inner.release.set()
    await cache.get("acme")
    clock.advance(timedelta(seconds=6))
    inner.release.clear()
    lookups = [asyncio.create_task(cache.get("acme")) for _ in range(32)]
    await asyncio.sleep(0)
    inner.release.set()
    assert {t.slug for t in await asyncio.gather(*lookups)} == {"acme"}
    assert inner.gets == 2
