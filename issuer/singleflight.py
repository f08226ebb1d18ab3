"""Concurrent calls for the same key share one in-flight call.

Without it, every cache in front of the database stampedes: when an entry expires, every request
in flight misses at once and each one queries the database (seen in the benchmarks as latency
spikes every cache TTL).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from functools import partial
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SingleFlight(Generic[K, V]):
    def __init__(self) -> None:
        self._calls: dict[K, asyncio.Future[V]] = {}

    def __len__(self) -> int:
        return len(self._calls)

    async def do(self, key: K, call: Callable[[], Awaitable[V]]) -> V:
        """Run `call` for `key` unless one is already running; every caller gets its result or
        its exception. A caller that is cancelled does not cancel the shared call."""
        future = self._calls.get(key)
        if future is None:
            future = asyncio.ensure_future(call())
            self._calls[key] = future
            future.add_done_callback(partial(self._forget, key))
        return await asyncio.shield(future)

    def _forget(self, key: K, future: asyncio.Future[V]) -> None:
        if self._calls.get(key) is future:
            del self._calls[key]
        if not future.cancelled():
            future.exception()  # retrieved: a failure nobody awaited must not warn at exit
