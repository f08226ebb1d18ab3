"""CachedSource: a CredentialSource that caches another one, keyed by `request.cache_key`.

The rules, in order of precedence:
1. Never vend credentials with less than FLOOR left, whatever happens.
2. Below REFRESH_AHEAD, refresh in the background (once per key) and keep serving the cache.
3. Concurrent callers of one key share one in-flight fetch (an asyncio task), never a poll loop.
4. A recoverable failure (CredentialsUnavailable) keeps the cached credentials flowing until the
   floor and is retried with jittered exponential backoff, per key, driven by the injected clock.
5. An irrecoverable failure (CredentialsRejected) drops the key's cached credentials.
6. Any other failure (ours: the audit log or the database down) is retried as in 4.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeAlias

from cachetools import LRUCache

from broker.errors import CredentialsRejected, CredentialsUnavailable
from broker.model import AwsCredentials, CredentialRequest
from broker.protocols import Clock, CredentialSource

__all__ = ["Backoff", "CacheStats", "CachedSource"]

# Vended credentials always have at least this long left. botocore starts refreshing 15 min
# before expiry (one thread, failures tolerated) and blocks every call from 10 min; credentials
# vended with less than 15 min make every SDK call a refresh (a storm on us and on STS). 20 min
# leaves 5 min of normal use beyond the SDK's advisory window.
FLOOR = timedelta(minutes=20)
# Below this much left, one background refresh starts while callers keep getting the cached
# credentials. The 10 min between here and FLOOR is how long an STS outage can last before any
# caller notices; 30 min also leaves a 1-hour session serving half its life from the cache.
REFRESH_AHEAD = timedelta(minutes=30)
# Keys are (integration, session policy, scope): one per live sandbox at most. 10,000 entries of a
# few hundred bytes each stay far below the broker's memory budget.
MAXSIZE = 10_000
# First retry of a failed key after about this long, doubling per failure: several attempts fit
# in the 10-minute refresh-ahead window, and an outage does not become a stampede on STS.
BACKOFF_BASE = timedelta(seconds=5)
# ...up to this: a recovered STS is noticed within 2 minutes.
BACKOFF_CAP = timedelta(minutes=2)
# Retry-After for a caller whose shared fetch was cancelled by evict(): asking again at once
# finds out whether the integration or sandbox still exists.
EVICTED_RETRY_AFTER = timedelta(seconds=1)

CacheKey: TypeAlias = tuple[str, str, str]  # (integration id, policy hash, scope)


@dataclass(frozen=True, slots=True)
class Backoff:
    """Jittered exponential backoff; tests pass a fixed `random` to make it deterministic."""

    base: timedelta = BACKOFF_BASE
    cap: timedelta = BACKOFF_CAP
    random: Callable[[], float] = random.random  # jitter, not cryptography

    def delay(self, failures: int) -> timedelta:
        """Equal jitter: half of the exponential step, plus a random share of the other half,
        so keys that failed together do not retry together."""
        step = min(self.cap, self.base * (1 << min(max(failures - 1, 0), 32)))
        return step / 2 + step / 2 * self.random()


@dataclass(frozen=True, slots=True)
class CacheStats:
    """Counters for metrics.

    hits: calls served from the cache. misses: calls that had to wait for (or were refused) a
    fetch. refreshes: fetches from the inner source started, cold or ahead of expiry.
    refresh_failures: such fetches that failed. evictions: entries removed before use, by
    evict() or by the LRU bound. size: entries held now.
    """

    hits: int
    misses: int
    refreshes: int
    refresh_failures: int
    evictions: int
    size: int


@dataclass(eq=False, slots=True)
class _Entry:
    """One key's state. Mutable on purpose: only the cache touches it, on the event loop."""

    credentials: AwsCredentials | None = None
    task: asyncio.Task[AwsCredentials] | None = None
    failures: int = 0  # consecutive recoverable failures
    retry_at: datetime | None = None  # no new fetch before this (backoff)
    last_error: CredentialsUnavailable | None = None


class _Store(LRUCache[CacheKey, _Entry]):
    """An LRU cache that reports what it pushes out."""

    def __init__(self, maxsize: int, on_evict: Callable[[], None]) -> None:
        super().__init__(maxsize)
        self._on_evict = on_evict

    def popitem(self) -> tuple[CacheKey, _Entry]:
        # An in-flight fetch of a pushed-out entry is left to finish for its waiters.
        item = super().popitem()
        self._on_evict()
        return item


class CachedSource:
    """Caches `inner`; is itself a CredentialSource."""

    def __init__(
        self,
        inner: CredentialSource,
        *,
        clock: Clock,
        floor: timedelta = FLOOR,
        refresh_ahead: timedelta = REFRESH_AHEAD,
        maxsize: int = MAXSIZE,
        backoff: Backoff | None = None,
    ) -> None:
        if floor <= timedelta(0):
            raise ValueError("floor must be positive")
        if refresh_ahead <= floor:
            raise ValueError(
                f"refresh_ahead ({refresh_ahead}) must be longer than floor ({floor}): "
                "otherwise credentials reach the floor before any refresh starts"
            )
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self._inner = inner
        self._clock = clock
        self._floor = floor
        self._refresh_ahead = refresh_ahead
        self._backoff = backoff if backoff is not None else Backoff()
        self._store = _Store(maxsize, self._count_eviction)
        self._tasks: set[asyncio.Task[AwsCredentials]] = set()
        self._hits = self._misses = self._refreshes = self._failures = self._evictions = 0

    @property
    def stats(self) -> CacheStats:
        return CacheStats(
            hits=self._hits,
            misses=self._misses,
            refreshes=self._refreshes,
            refresh_failures=self._failures,
            evictions=self._evictions,
            size=len(self._store),
        )

    async def fetch(self, request: CredentialRequest) -> AwsCredentials:
        key = request.cache_key
        now = self._clock()
        entry = self._store.get(key)
        if entry is not None and entry.credentials is not None:
            left = entry.credentials.remaining(now)
            if left >= self._floor:
                self._hits += 1
                if left < self._refresh_ahead and entry.task is None and _due(entry, now):
                    self._start(entry, key, request)
                return entry.credentials
        self._misses += 1
        if entry is None:
            entry = _Entry()
            self._store[key] = entry
        task = entry.task
        if task is None:
            if not _due(entry, now):
                raise _backing_off(request, entry, now)
            task = self._start(entry, key, request)
        return await _join(task, request)

    def evict(self, integration_id: str | None = None, scope: str | None = None) -> int:
        """Drop the entries of an integration and/or a scope (None matches any; both None drops
        everything) and cancel their in-flight fetches. Returns how many were dropped."""
        doomed = [
            key
            for key in list(self._store.keys())
            if (integration_id is None or key[0] == integration_id)
            and (scope is None or key[2] == scope)
        ]
        for key in doomed:
            entry = self._store.pop(key)
            if entry.task is not None:
                entry.task.cancel()
        self._evictions += len(doomed)
        return len(doomed)

    async def close(self) -> None:
        """Cancel every in-flight fetch and wait for them to end."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _start(
        self, entry: _Entry, key: CacheKey, request: CredentialRequest
    ) -> asyncio.Task[AwsCredentials]:
        self._refreshes += 1
        task = asyncio.get_running_loop().create_task(
            self._refresh(entry, key, request), name=f"warrant-credentials-{key[0]}-{key[2]}"
        )
        entry.task = task
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[AwsCredentials]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            task.exception()  # a background refresh may have no waiter: mark its error seen

    async def _refresh(
        self, entry: _Entry, key: CacheKey, request: CredentialRequest
    ) -> AwsCredentials:
        try:
            try:
                credentials = await self._inner.fetch(request)
            except CredentialsRejected:
                self._failures += 1
                self._drop(key, entry)
                raise
            except CredentialsUnavailable as exc:
                self._failures += 1
                raise self._back_off(entry, exc) from exc
            except Exception as exc:
                # Our side failed, not AWS (the audit log or the database is down): back off all
                # the same, or every request would repeat the IMDS and STS calls only to throw
                # their result away. The caller still gets the error itself.
                self._failures += 1
                # A fixed message: an arbitrary exception's text is not safe to show a caller.
                failure = f"a refresh failed on Warrant's side ({type(exc).__name__}); see the log"
                self._back_off(entry, CredentialsUnavailable(failure))
                raise
            left = credentials.remaining(self._clock())
            if left < self._floor:
                self._failures += 1
                short = _too_short(request, left, self._floor, self._refresh_ahead)
                raise self._back_off(entry, short)
            entry.credentials = credentials
            entry.failures = 0
            entry.retry_at = None
            entry.last_error = None
            return credentials
        finally:
            entry.task = None

    def _back_off(self, entry: _Entry, exc: CredentialsUnavailable) -> CredentialsUnavailable:
        """Record a recoverable failure; the error for callers says when to come back."""
        entry.failures += 1
        delay = self._backoff.delay(entry.failures)
        entry.retry_at = self._clock() + delay
        entry.last_error = exc
        return CredentialsUnavailable(
            exc.message,
            sts_code=exc.sts_code,
            retry_after=max(exc.retry_after, math.ceil(delay.total_seconds())),
        )

    def _drop(self, key: CacheKey, entry: _Entry) -> None:
        if self._store.get(key) is entry:
            del self._store[key]
        entry.credentials = None

    def _count_eviction(self) -> None:
        self._evictions += 1


def _due(entry: _Entry, now: datetime) -> bool:
    return entry.retry_at is None or now >= entry.retry_at


async def _join(task: asyncio.Task[AwsCredentials], request: CredentialRequest) -> AwsCredentials:
    """Wait for a shared fetch. Shielded: one caller giving up does not cancel it for others."""
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if task.cancelled() and (current is None or current.cancelling() == 0):
            # The fetch was cancelled under us by evict() or close(), not this caller.
            raise CredentialsUnavailable(
                f"credentials for integration {request.integration.id} were evicted while "
                "being fetched",
                retry_after=int(EVICTED_RETRY_AFTER.total_seconds()),
            ) from None
        raise


def _backing_off(
    request: CredentialRequest, entry: _Entry, now: datetime
) -> CredentialsUnavailable:
    assert entry.retry_at is not None  # noqa: S101 - _due() was False
    wait = max(1, math.ceil((entry.retry_at - now).total_seconds()))
    last = entry.last_error
    cause = f": {last.message}" if last is not None else ""
    return CredentialsUnavailable(
        f"credentials for integration {request.integration.id} are unavailable after "
        f"{entry.failures} failed attempt(s); next attempt in {wait} s{cause}",
        sts_code=last.sts_code if last is not None else None,
        retry_after=wait,
    )


def _too_short(
    request: CredentialRequest, left: timedelta, floor: timedelta, refresh_ahead: timedelta
) -> CredentialsUnavailable:
    integration = request.integration
    # Fresh credentials should spend a while above refresh_ahead, or every call refreshes.
    advice = max(timedelta(hours=1), 2 * refresh_ahead)
    return CredentialsUnavailable(
        f"{integration.role_arn} returned credentials with {int(left.total_seconds())} s left, "
        f"less than the {int(floor.total_seconds())} s the broker guarantees to SDKs (they "
        "refresh from 15 minutes before expiry): the role's session duration is too short; "
        f"set integration {integration.id}'s session_duration to at least "
        f"{int(advice.total_seconds())} s"
    )
