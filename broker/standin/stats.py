"""Counts of requests per Action and outcome: `ok`, an AWS error code, or `HTTP <status>` for a
failure moto answered with on a forwarded call."""

from __future__ import annotations

import threading
from collections import Counter, defaultdict

__all__ = ["Stats"]


class Stats:
    def __init__(self) -> None:
        self._counts: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self._lock = threading.Lock()

    def count(self, action: str | None, outcome: str) -> None:
        with self._lock:
            self._counts[action or "(none)"][outcome] += 1

    def snapshot(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {action: dict(outcomes) for action, outcomes in self._counts.items()}

    def clear(self) -> None:
        with self._lock:
            self._counts.clear()
