"""The one error of the benchmarks."""

from __future__ import annotations


class BenchError(Exception):
    """A benchmark could not produce a trustworthy figure; the message says why and what to do."""
