"""The broker's view in Prometheus: the credential cache's counters, read live at scrape time."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from broker.cache import CachedSource


class CacheCollector(Collector):
    def __init__(self, cache: CachedSource) -> None:
        self._cache = cache

    def collect(self) -> Iterator[Metric]:
        stats = self._cache.stats
        for name, value, help_text in (
            ("hits", stats.hits, "Credential requests served from the cache"),
            ("misses", stats.misses, "Credential requests that waited for an STS call"),
            ("refreshes", stats.refreshes, "STS calls started, cold or ahead of expiry"),
            ("refresh_failures", stats.refresh_failures, "STS calls that failed"),
            ("evictions", stats.evictions, "Cached sessions dropped before use"),
        ):
            yield CounterMetricFamily(f"warrant_credential_cache_{name}", help_text, value=value)
        yield GaugeMetricFamily(
            "warrant_credential_cache_size", "Sessions cached now", value=stats.size
        )
