"""Passing a request to moto's server unchanged and bringing its answer back.

The Host header is kept as the client sent it (botocore signed it, and moto routes some services
by host); moto finds the service from the SigV4 credential scope or, for unsigned calls, from
the Action. Hop-by-hop headers are dropped both ways; the body is relayed byte for byte.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

import httpx

from broker.standin.query import IncomingRequest

__all__ = ["MOTO_TIMEOUT", "MotoForwarder", "Relayed"]

# moto answers in milliseconds; 30 s covers a large S3 upload without hiding a wedged server.
MOTO_TIMEOUT = timedelta(seconds=30)
MOTO_CONNECT_TIMEOUT = timedelta(seconds=2)
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "content-length",
    }
)


@dataclass(frozen=True)
class Relayed:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes = field(repr=False)


def moto_client() -> httpx.AsyncClient:
    timeout = httpx.Timeout(
        MOTO_TIMEOUT.total_seconds(), connect=MOTO_CONNECT_TIMEOUT.total_seconds()
    )
    return httpx.AsyncClient(timeout=timeout, trust_env=False, follow_redirects=False)


class MotoForwarder:
    def __init__(self, http: httpx.AsyncClient, moto_url: str) -> None:
        self._http = http
        self._moto_url = moto_url.rstrip("/")

    async def forward(self, request: IncomingRequest) -> Relayed:
        url = self._moto_url + (request.raw_path or "/")
        if request.query_string:
            url += "?" + request.query_string
        headers = [(k, v) for k, v in request.headers if k.lower() not in _HOP_BY_HOP]
        outgoing = self._http.build_request(
            request.method, url, headers=headers, content=request.body
        )
        response = await self._http.send(outgoing, stream=True)
        try:
            body = b"".join([chunk async for chunk in response.aiter_raw()])
        finally:
            await response.aclose()
        kept = tuple(
            (k, v) for k, v in response.headers.multi_items() if k.lower() not in _HOP_BY_HOP
        )
        return Relayed(response.status_code, kept, body)
