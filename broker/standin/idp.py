"""Fetching an identity provider's verification keys the way STS does (aws-facts §1.2):
`<iss>/.well-known/openid-configuration`, then its `jwks_uri`, each within 5 seconds and with
HTTP 200, cached only as long as the response's `Cache-Control: max-age` allows (`no-cache`,
`no-store`, `max-age=0` or no header: refetched on every call, which is what makes parallel
exchanges fail against real STS).

A token whose `kid` is missing from a cached JWKS causes one refetch within that request, never
more. (Whether STS refetches on an unknown kid is unconfirmed; publish keys before using them.)
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx

from broker.standin.errors import StsError, invalid_identity_token
from broker.standin.model import Clock

__all__ = ["DISCOVERY_PATH", "IdpKeys"]

log = logging.getLogger(__name__)

DISCOVERY_PATH = "/.well-known/openid-configuration"
# STS gives up on a discovery document or JWKS that takes longer than this (rePost-IIT).
IDP_TIMEOUT = timedelta(seconds=5)
# Far above any real discovery document or JWKS (STS's own limit is unconfirmed).
MAX_DOCUMENT_BYTES = 1 << 20
_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d+)\"?\s*(?:,|$)", re.IGNORECASE)
_NO_CACHE = re.compile(r"(?:^|,)\s*(?:no-cache|no-store)\s*(?:[=,]|$)", re.IGNORECASE)


def cache_lifetime(headers: httpx.Headers) -> timedelta:
    """How long a response may be reused; zero means refetch next time."""
    if "no-cache" in headers.get("pragma", "").lower():
        return timedelta(0)
    cache_control = headers.get("cache-control", "")
    if _NO_CACHE.search(cache_control):
        return timedelta(0)
    match = _MAX_AGE.search(cache_control)
    return timedelta(seconds=int(match.group(1))) if match else timedelta(0)


@dataclass(frozen=True)
class _Cached:
    document: Mapping[str, Any] = field(repr=False)
    expires_at: datetime


class IdpKeys:
    """The verification key for (issuer, kid), or `InvalidIdentityToken`."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        clock: Clock,
        *,
        allow_http: bool = False,
        timeout: timedelta = IDP_TIMEOUT,
    ) -> None:
        self._http = http
        self._clock = clock
        self._allow_http = allow_http
        self._timeout = timeout
        self._cache: dict[str, _Cached] = {}
        self._lock = threading.Lock()

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()

    async def signing_key(self, issuer: str, kid: str | None) -> Mapping[str, Any]:
        discovery, _ = await self._document(issuer.rstrip("/") + DISCOVERY_PATH)
        if discovery.get("issuer") != issuer:
            log.warning("discovery issuer %r differs from iss %r", discovery.get("issuer"), issuer)
            raise invalid_identity_token(
                f"Please check .well-known/openid-configuration of provider: {issuer} is valid."
            )
        jwks_uri = discovery.get("jwks_uri")
        if not isinstance(jwks_uri, str) or not self._scheme_ok(jwks_uri):
            log.warning("discovery for %s has an unusable jwks_uri %r", issuer, jwks_uri)
            raise invalid_identity_token()
        if kid is None:
            log.info("token from %s has no kid; keys are selected by kid", issuer)
            raise invalid_identity_token()
        jwks, cached = await self._document(jwks_uri)
        key = _find(jwks, kid)
        if key is None and cached:
            jwks, _ = await self._document(jwks_uri, refresh=True)
            key = _find(jwks, kid)
        if key is None:
            log.info("kid %r not in the JWKS at %s", kid, jwks_uri)
            raise invalid_identity_token()
        return key

    def _scheme_ok(self, url: str) -> bool:
        return url.startswith("https://") or (self._allow_http and url.startswith("http://"))

    async def _document(self, url: str, *, refresh: bool = False) -> tuple[Mapping[str, Any], bool]:
        """(document, came from cache)."""
        now = self._clock()
        with self._lock:
            entry = self._cache.get(url)
        if entry is not None and not refresh and now < entry.expires_at:
            return entry.document, True
        document, lifetime = await self._fetch(url)
        if lifetime > timedelta(0):
            with self._lock:
                self._cache[url] = _Cached(document, now + lifetime)
        else:
            with self._lock:
                self._cache.pop(url, None)
        return document, False

    async def _fetch(self, url: str) -> tuple[Mapping[str, Any], timedelta]:
        try:
            async with asyncio.timeout(self._timeout.total_seconds()):
                response = await self._http.get(url, follow_redirects=False)
        except (TimeoutError, httpx.HTTPError) as exc:
            log.warning("could not fetch %s: %s", url, type(exc).__name__)
            raise invalid_identity_token() from exc
        if response.status_code != 200 or len(response.content) > MAX_DOCUMENT_BYTES:
            log.warning("fetching %s gave HTTP %s", url, response.status_code)
            raise invalid_identity_token()
        try:
            document = json.loads(response.content)
        except ValueError as exc:
            raise _bad_document(url) from exc
        if not isinstance(document, dict):
            raise _bad_document(url)
        return document, cache_lifetime(response.headers)


def _bad_document(url: str) -> StsError:
    log.warning("%s is not a JSON object", url)
    return invalid_identity_token()


def _find(jwks: Mapping[str, Any], kid: str) -> Mapping[str, Any] | None:
    keys = jwks.get("keys")
    if not isinstance(keys, list):
        return None
    for key in keys:
        if isinstance(key, dict) and key.get("kid") == kid:
            return key
    return None
