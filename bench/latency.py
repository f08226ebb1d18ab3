"""Latency samples of one-at-a-time requests timed by the benchmark itself (no load generator)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from bench.cpustat import Interference

__all__ = ["LatencyRun"]


@dataclass(frozen=True, slots=True)
class LatencyRun:
    """`samples_ms` in the order taken; `errors` counts attempts that gave no sample."""

    name: str
    what: str  # the operation timed, for the report
    samples_ms: Sequence[float]
    errors: int = 0
    interference: Interference | None = None  # others' use of the pinned CPUs meanwhile

    @property
    def count(self) -> int:
        return len(self.samples_ms)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.samples_ms) if self.samples_ms else 0.0

    @property
    def p90_ms(self) -> float:
        if len(self.samples_ms) < 2:
            return self.max_ms
        return statistics.quantiles(self.samples_ms, n=10, method="inclusive")[8]

    @property
    def min_ms(self) -> float:
        return min(self.samples_ms, default=0.0)

    @property
    def max_ms(self) -> float:
        return max(self.samples_ms, default=0.0)
