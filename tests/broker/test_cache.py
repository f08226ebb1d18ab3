"""CachedSource: single flight, refresh ahead, the floor, backoff, eviction, bounds."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import TYPE_CHECKING

import pytest

from broker.cache import FLOOR, REFRESH_AHEAD, Backoff, CachedSource
from broker.errors import CredentialsRejected, CredentialsUnavailable
from broker.model import CredentialRequest
from tests.broker.fakes import FakeSource, integration, request
from tests.conftest import FakeClock

if TYPE_CHECKING:
    from broker.protocols import CredentialSource

HOUR = timedelta(hours=1)
MINUTE = timedelta(minutes=1)
# With random() fixed at 0 the delays are exactly half the exponential step: 2.5 s, 5 s, 10 s...
NO_JITTER = Backoff(base=timedelta(seconds=5), cap=timedelta(minutes=2), random=lambda: 0.0)


def outage() -> CredentialsUnavailable:
    return CredentialsUnavailable("sts:AssumeRole failed: ServiceUnavailable", retry_after=5)


def denied() -> CredentialsRejected:
    return CredentialsRejected("sts:AssumeRole failed: AccessDenied", sts_code="AccessDenied")


async def settle(until: Callable[[], bool] = lambda: False, rounds: int = 50) -> None:
    """Let background tasks run: until `until()` holds, or for `rounds` loop turns."""
    for _ in range(rounds):
        if until():
            return
        await asyncio.sleep(0)


@pytest.fixture
def inner(clock: FakeClock) -> FakeSource:
    return FakeSource(clock)


@pytest.fixture
async def cache(inner: FakeSource, clock: FakeClock) -> AsyncIterator[CachedSource]:
    cached = CachedSource(inner, clock=clock, backoff=NO_JITTER)
    yield cached
    await cached.close()


async def test_concurrent_cold_fetches_share_one_inner_fetch(
    cache: CachedSource, inner: FakeSource
) -> None:
    """1,000 concurrent cold fetches of one key make one inner fetch and share its result."""
    inner.gate = asyncio.Event()
    tasks = [asyncio.create_task(cache.fetch(request())) for _ in range(1000)]
    await settle(rounds=5)
    assert inner.count == 1
    inner.gate.set()
    results = await asyncio.gather(*tasks)
    assert inner.count == 1
    assert all(creds is results[0] for creds in results)
    assert cache.stats.misses == 1000
    assert cache.stats.refreshes == 1


async def test_hit_serves_cached_credentials(cache: CachedSource, inner: FakeSource) -> None:
    """A second fetch of a key with plenty of time left is served from the cache."""
    first = await cache.fetch(request())
    second = await cache.fetch(request())
    assert second is first
    assert inner.count == 1
    assert (cache.stats.hits, cache.stats.misses) == (1, 1)


async def test_refresh_ahead_starts_one_background_refresh(
    cache: CachedSource, inner: FakeSource, clock: FakeClock
) -> None:
    """Below refresh_ahead, one background refresh starts and callers get the old credentials."""
    old = await cache.fetch(request())
    clock.advance(HOUR - REFRESH_AHEAD + MINUTE)  # 29 min left
    inner.gate = asyncio.Event()
    for _ in range(100):
        assert await cache.fetch(request()) is old
    await settle(rounds=5)
    assert inner.count == 2  # the cold fetch, and exactly one refresh
    inner.gate.set()
    await settle(until=lambda: len(inner.returned) == 2)
    new = await cache.fetch(request())
    assert new is inner.returned[-1]
    assert new is not old
    assert inner.count == 2


async def test_outage_serves_cache_until_the_floor_then_fails_then_recovers(
    cache: CachedSource, inner: FakeSource, clock: FakeClock
) -> None:
    """An STS outage is invisible until the floor, then callers get 503 with Retry-After."""
    old = await cache.fetch(request())
    inner.default = outage()
    clock.advance(HOUR - REFRESH_AHEAD)
    while old.remaining(clock()) - MINUTE >= FLOOR:
        clock.advance(MINUTE)
        assert await cache.fetch(request()) is old
        await settle()
    assert inner.count > 2  # refreshes were retried during the outage
    assert cache.stats.refresh_failures == inner.count - 1
    clock.advance(MINUTE)  # now below the floor
    with pytest.raises(CredentialsUnavailable) as caught:
        await cache.fetch(request())
    assert caught.value.retry_after >= 1
    assert "ServiceUnavailable" in caught.value.message

    inner.default = HOUR  # STS is back
    clock.advance(timedelta(minutes=3))  # past any backoff
    new = await cache.fetch(request())
    assert new is not old
    assert new.remaining(clock()) >= FLOOR


async def test_backoff_spaces_refresh_attempts(
    cache: CachedSource, inner: FakeSource, clock: FakeClock
) -> None:
    """After a failed refresh, no new attempt starts until the backoff delay has passed."""
    await cache.fetch(request())
    inner.default = outage()
    clock.advance(HOUR - REFRESH_AHEAD + MINUTE)
    await cache.fetch(request())
    await settle()
    assert inner.count == 2
    for _ in range(10):
        await cache.fetch(request())
        await settle()
    assert inner.count == 2  # still within the first 2.5 s delay
    clock.advance(timedelta(seconds=3))
    await cache.fetch(request())
    await settle()
    assert inner.count == 3


async def test_below_floor_while_backing_off_fails_fast(
    cache: CachedSource, inner: FakeSource, clock: FakeClock
) -> None:
    """Below the floor and inside a backoff delay, callers are told when to retry, STS is not."""
    await cache.fetch(request())
    inner.default = outage()
    clock.advance(HOUR - FLOOR + MINUTE)  # 19 min left: below the floor
    with pytest.raises(CredentialsUnavailable):
        await cache.fetch(request())
    calls = inner.count
    clock.advance(timedelta(seconds=1))
    with pytest.raises(CredentialsUnavailable) as caught:
        await cache.fetch(request())
    assert inner.count == calls
    assert caught.value.retry_after >= 1
    assert "next attempt in" in caught.value.message
    assert "ServiceUnavailable" in caught.value.message


async def test_cold_outage_is_retried_after_backoff(
    cache: CachedSource, inner: FakeSource, clock: FakeClock
) -> None:
    """A failed cold fetch raises with Retry-After and the next attempt waits for the backoff."""
    inner.then(outage())
    with pytest.raises(CredentialsUnavailable) as caught:
        await cache.fetch(request())
    assert caught.value.retry_after >= 3
    with pytest.raises(CredentialsUnavailable):
        await cache.fetch(request())
    assert inner.count == 1
    clock.advance(timedelta(seconds=3))
    creds = await cache.fetch(request())
    assert creds.remaining(clock()) >= FLOOR
    assert inner.count == 2


async def test_irrecoverable_refresh_failure_drops_the_entry(
    cache: CachedSource, inner: FakeSource, clock: FakeClock
) -> None:
    """CredentialsRejected during a background refresh drops the cached credentials."""
    old = await cache.fetch(request())
    inner.then(denied())
    clock.advance(HOUR - REFRESH_AHEAD + MINUTE)
    assert await cache.fetch(request()) is old  # still valid when the refresh started
    await settle(until=lambda: cache.stats.refresh_failures == 1)
    assert cache.stats.size == 0
    inner.then(denied())
    with pytest.raises(CredentialsRejected):
        await cache.fetch(request())
    assert inner.count == 3


async def test_cold_rejection_is_raised_and_not_cached(
    cache: CachedSource, inner: FakeSource
) -> None:
    """A rejected cold fetch reaches the caller, and the next call asks the inner source again."""
    inner.then(denied())
    with pytest.raises(CredentialsRejected) as caught:
        await cache.fetch(request())
    assert caught.value.sts_code == "AccessDenied"
    await cache.fetch(request())
    assert inner.count == 2


async def test_credentials_shorter_than_the_floor_are_never_vended(
    cache: CachedSource, inner: FakeSource
) -> None:
    """An inner source returning credentials below the floor is an error naming the cause."""
    inner.then(timedelta(minutes=15))
    with pytest.raises(CredentialsUnavailable) as caught:
        await cache.fetch(request())
    assert "session duration is too short" in caught.value.message
    assert integration().role_arn in caught.value.message


async def test_vended_credentials_never_have_less_than_the_floor(clock: FakeClock) -> None:
    """Over a long run with random outages and lifetimes, every vended credential has >= floor."""
    rng = random.Random(20260101)  # noqa: S311 - a seeded, repeatable test schedule
    inner = FakeSource(clock)
    cache = CachedSource(inner, clock=clock, backoff=Backoff(random=rng.random))
    vended = failed = 0
    try:
        for _ in range(600):
            inner.default = (
                outage()
                if rng.random() < 0.3
                else timedelta(minutes=rng.choice([10, 25, 45, 60, 120, 720]))
            )
            for scope in ("int-1", "sbx-1", "sbx-2"):
                try:
                    creds = await cache.fetch(request(scope=scope))
                except CredentialsUnavailable:
                    failed += 1
                else:
                    vended += 1
                    assert creds.remaining(clock()) >= FLOOR
            await settle(rounds=3)
            clock.advance(timedelta(seconds=rng.randrange(1, 600)))
    finally:
        await cache.close()
    assert vended > 1000
    assert failed > 0


async def test_evict_by_integration_and_by_scope(cache: CachedSource, inner: FakeSource) -> None:
    """evict() drops the entries matching an integration or a scope, and only those."""
    other = integration(id="int-2")
    for req in (
        request(scope="sbx-1"),
        request(scope="sbx-2"),
        request(other, scope="sbx-1"),
        request(other),
    ):
        await cache.fetch(req)
    assert cache.evict(integration_id="int-1") == 2
    assert cache.evict(scope="sbx-1") == 1
    assert cache.stats.size == 1
    assert cache.stats.evictions == 3
    calls = inner.count
    await cache.fetch(request(other))  # still cached
    assert inner.count == calls
    await cache.fetch(request(scope="sbx-1"))  # evicted: fetched again
    assert inner.count == calls + 1


async def test_evict_cancels_the_in_flight_fetch(cache: CachedSource, inner: FakeSource) -> None:
    """Evicting a key cancels its in-flight fetch; its waiters get a retryable error."""
    inner.gate = asyncio.Event()
    waiter = asyncio.create_task(cache.fetch(request(scope="sbx-1")))
    await settle(until=lambda: inner.count == 1)
    assert cache.evict(scope="sbx-1") == 1
    with pytest.raises(CredentialsUnavailable, match="evicted"):
        await waiter


async def test_a_cancelled_caller_does_not_cancel_the_shared_fetch(
    cache: CachedSource, inner: FakeSource
) -> None:
    """One caller giving up leaves the shared fetch running for the others."""
    inner.gate = asyncio.Event()
    quitter = asyncio.create_task(cache.fetch(request()))
    stayer = asyncio.create_task(cache.fetch(request()))
    await settle(until=lambda: inner.count == 1)
    quitter.cancel()
    await settle(rounds=3)
    inner.gate.set()
    creds = await stayer
    assert quitter.cancelled()
    assert creds is inner.returned[0]


async def test_close_cancels_background_refreshes(inner: FakeSource, clock: FakeClock) -> None:
    """close() cancels refreshes still in flight."""
    cache = CachedSource(inner, clock=clock)
    await cache.fetch(request())
    clock.advance(HOUR - REFRESH_AHEAD + MINUTE)
    inner.gate = asyncio.Event()
    await cache.fetch(request())
    await settle(until=lambda: inner.count == 2)
    await cache.close()
    inner.gate.set()
    await settle()
    assert len(inner.returned) == 1


async def test_size_is_bounded(inner: FakeSource, clock: FakeClock) -> None:
    """The cache holds at most maxsize entries, pushing out the least recently used."""
    cache = CachedSource(inner, clock=clock, maxsize=3)
    for n in range(5):
        await cache.fetch(request(scope=f"sbx-{n}"))
    assert cache.stats.size == 3
    assert cache.stats.evictions == 2
    await cache.fetch(request(scope="sbx-4"))
    assert inner.count == 5
    await cache.fetch(request(scope="sbx-0"))
    assert inner.count == 6
    await cache.close()


@pytest.mark.parametrize(
    ("first", "second", "shared"),
    [
        (request(), request(), True),
        (request(session_policy='{"a":1}'), request(session_policy='{"a":1}'), True),
        (request(session_policy='{"a":1}'), request(session_policy='{"a":2}'), False),
        (request(), request(session_policy='{"a":1}'), False),
        (request(scope="sbx-1"), request(scope="sbx-2"), False),
        (request(), request(integration(id="int-2")), False),
        (request(session_name="a-1"), request(session_name="a-2"), True),
    ],
)
async def test_cache_keys(
    cache: CachedSource,
    inner: FakeSource,
    first: CredentialRequest,
    second: CredentialRequest,
    shared: bool,
) -> None:
    """Integration, session policy and scope make a key; requests differing in any are apart."""
    await cache.fetch(first)
    await cache.fetch(second)
    assert inner.count == (1 if shared else 2)


@pytest.mark.parametrize(
    ("failures", "seconds"),
    [(1, 2.5), (2, 5), (3, 10), (4, 20), (5, 40), (6, 60), (7, 60), (100, 60)],
)
def test_backoff_doubles_up_to_the_cap(failures: int, seconds: float) -> None:
    """Backoff delays double per failure and stop at the cap (shown without jitter)."""
    assert NO_JITTER.delay(failures) == timedelta(seconds=seconds)


def test_backoff_jitter_stays_within_the_step() -> None:
    """Jitter keeps each delay between half the step and the whole step."""
    assert Backoff(random=lambda: 0.999).delay(3) < timedelta(seconds=20)
    assert Backoff(random=lambda: 0.0).delay(3) == timedelta(seconds=10)


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"floor": timedelta(minutes=30), "refresh_ahead": timedelta(minutes=30)}, "refresh_ahead"),
        ({"floor": timedelta(minutes=40)}, "refresh_ahead"),
        ({"floor": timedelta(0)}, "floor"),
        ({"maxsize": 0}, "maxsize"),
    ],
)
def test_construction_is_validated(
    inner: FakeSource, clock: FakeClock, kwargs: dict[str, object], problem: str
) -> None:
    """Settings that would break the floor guarantee or the bound fail at construction."""
    with pytest.raises(ValueError, match=problem):
        CachedSource(inner, clock=clock, **kwargs)  # type: ignore[arg-type]


if TYPE_CHECKING:  # the cache is itself a CredentialSource
    _pinned: CredentialSource = CachedSource(FakeSource(FakeClock()), clock=FakeClock())
