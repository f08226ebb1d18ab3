"""Many POST requests from this process at once (asyncio + httpx): set-up at scale, and bursts
whose concurrency is the point (the STS single-flight figure).

wrk cannot send a different JSON body per request or read the answers back; this can. It is not
a load generator: nothing here is a throughput figure.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx

__all__ = ["Answer", "Burst", "post_all"]

# A request waiting behind a thousand others on one CPU, or on an STS call held on purpose,
# still answers within seconds; past this something is stuck.
REQUEST_TIMEOUT = timedelta(seconds=60)


@dataclass(frozen=True, slots=True)
class Answer:
    """One request's outcome: its status (0 when it failed in transport) and JSON object."""

    status: int
    body: Mapping[str, Any] = field(default_factory=dict)
    error: str = ""


@dataclass(frozen=True, slots=True)
class Burst:
    answers: Sequence[Answer]
    seconds: float  # from the first request sent to the last answer

    def count(self, status: int) -> int:
        return sum(answer.status == status for answer in self.answers)

    def failures(self, expect: int) -> list[str]:
        """What went wrong, one line per unexpected answer."""
        return [
            a.error or f"status {a.status}: {str(dict(a.body))[:200]}"
            for a in self.answers
            if a.status != expect
        ]


def post_all(
    url: str,
    bodies: Sequence[Mapping[str, Any]],
    headers: Mapping[str, str],
    *,
    in_flight: int,
) -> Burst:
    """POST each body as JSON with at most `in_flight` requests (and connections) at once; with
    `in_flight` >= len(bodies), all of them at the same time."""
    return asyncio.run(_post_all(url, bodies, headers, in_flight))


async def _post_all(
    url: str, bodies: Sequence[Mapping[str, Any]], headers: Mapping[str, str], in_flight: int
) -> Burst:
    limits = httpx.Limits(max_connections=in_flight, max_keepalive_connections=in_flight)
    gate = asyncio.Semaphore(in_flight)
    async with httpx.AsyncClient(
        limits=limits, timeout=REQUEST_TIMEOUT.total_seconds(), headers=dict(headers)
    ) as client:

        async def post(body: Mapping[str, Any]) -> Answer:
            async with gate:
                return await _post(client, url, body)

        start = time.perf_counter()
        answers = await asyncio.gather(*(post(body) for body in bodies))
        return Burst(answers, time.perf_counter() - start)


async def _post(client: httpx.AsyncClient, url: str, body: Mapping[str, Any]) -> Answer:
    try:
        response = await client.post(url, json=dict(body))
    except httpx.HTTPError as exc:
        return Answer(0, error=f"{type(exc).__name__}: {exc}")
    try:
        value = response.json()
    except ValueError:
        value = {}
    return Answer(response.status_code, value if isinstance(value, dict) else {})
