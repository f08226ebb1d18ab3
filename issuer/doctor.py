"""`warrant doctor`: check the public side as AWS STS will see it.

STS fetches `<issuer>/.well-known/openid-configuration`, then `jwks_uri`, over the internet, and
gives up after 5 seconds; it needs `issuer` byte-identical to the token's `iss`, and a JWKS it
may cache (no-cache makes parallel exchanges fail). Each check here says what to fix.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from keys.errors import KeysError
from keys.jwk import PUBLIC_MEMBERS, import_jwk, thumbprint

# STS's limit for fetching each document; we want to be well inside it.
STS_FETCH_LIMIT = 5.0
SLOW = 1.0
# AWS accepts these signature algorithms for web-identity tokens.
AWS_ALGS = frozenset({"RS256", "RS384", "RS512", "ES256", "ES384", "ES512"})
_MAX_AGE = re.compile(r"max-age=(\d+)")


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class _Fetched:
    response: httpx.Response | None
    seconds: float
    error: str | None


async def run_checks(
    issuer_url: str, client: httpx.AsyncClient, *, clock: Callable[[], float] = time.perf_counter
) -> list[Check]:
    checks: list[Check] = []
    discovery_url = issuer_url.rstrip("/") + "/.well-known/openid-configuration"
    fetched = await _fetch(client, discovery_url, clock)
    document = _document(checks, "discovery", discovery_url, fetched)
    if document is None:
        return checks
    issuer = document.get("issuer")
    checks.append(
        Check(
            "discovery issuer",
            issuer == issuer_url,
            f"issuer is {issuer!r}"
            + (
                ""
                if issuer == issuer_url
                else f"; it must be exactly {issuer_url!r} (the tokens' iss and "
                "the IAM provider URL)"
            ),
        )
    )
    algs = set(document.get("id_token_signing_alg_values_supported") or [])
    checks.append(
        Check(
            "signing algorithms",
            bool(algs) and algs <= AWS_ALGS,
            f"advertised {sorted(algs)}; AWS accepts {sorted(AWS_ALGS)}",
        )
    )
    jwks_uri = document.get("jwks_uri")
    if not isinstance(jwks_uri, str):
        checks.append(Check("jwks_uri", False, "discovery has no jwks_uri"))
        return checks
    jwks = _document(checks, "jwks", jwks_uri, await _fetch(client, jwks_uri, clock))
    if jwks is not None:
        checks.append(_check_keys(jwks))
    return checks


async def _fetch(client: httpx.AsyncClient, url: str, clock: Callable[[], float]) -> _Fetched:
    start = clock()
    try:
        response = await client.get(url, timeout=STS_FETCH_LIMIT)
    except httpx.HTTPError as exc:
        return _Fetched(None, clock() - start, f"{type(exc).__name__}: {exc}")
    return _Fetched(response, clock() - start, None)


def _document(checks: list[Check], name: str, url: str, fetched: _Fetched) -> dict[str, Any] | None:
    response = fetched.response
    if response is None:
        checks.append(
            Check(
                f"{name} reachable",
                False,
                f"GET {url} failed ({fetched.error}); STS must reach it from the internet",
            )
        )
        return None
    ok = response.status_code == 200
    checks.append(Check(f"{name} reachable", ok, f"GET {url} -> {response.status_code}"))
    if not ok:
        return None
    ms = fetched.seconds * 1000
    checks.append(
        Check(
            f"{name} response time",
            fetched.seconds < SLOW,
            f"{ms:.0f} ms (STS gives up after {STS_FETCH_LIMIT:.0f} s)",
        )
    )
    cache = response.headers.get("cache-control", "")
    match = _MAX_AGE.search(cache)
    cacheable = (
        match is not None
        and int(match.group(1)) > 0
        and "no-cache" not in cache
        and "no-store" not in cache
        and "no-cache" not in response.headers.get("pragma", "")
    )
    checks.append(
        Check(
            f"{name} cache headers",
            cacheable,
            f"Cache-Control: {cache or '(none)'}"
            + (
                ""
                if cacheable
                else "; send a positive max-age and never no-cache: STS would refetch on "
                "every call and parallel exchanges fail"
            ),
        )
    )
    content_type = response.headers.get("content-type", "")
    checks.append(
        Check(
            f"{name} content type",
            content_type.startswith("application/json"),
            f"Content-Type: {content_type or '(none)'}",
        )
    )
    try:
        value = json.loads(response.content)
    except ValueError:
        checks.append(Check(f"{name} JSON", False, "the body is not JSON"))
        return None
    if not isinstance(value, dict):
        checks.append(Check(f"{name} JSON", False, "the body is not a JSON object"))
        return None
    return value


def _check_keys(jwks: dict[str, Any]) -> Check:
    keys = jwks.get("keys")
    if not isinstance(keys, list) or not keys:
        return Check("published keys", False, "the JWKS has no keys: nothing can verify tokens")
    problems: list[str] = []
    kids: set[str] = set()
    for index, key in enumerate(keys):
        kid = key.get("kid") if isinstance(key, dict) else None
        if not isinstance(kid, str) or not kid:
            problems.append(f"key {index} has no kid")
            continue
        if kid in kids:
            problems.append(f"kid {kid} appears twice")
        kids.add(kid)
        extra = set(key) - set(PUBLIC_MEMBERS)
        if extra:
            problems.append(f"kid {kid} publishes non-public members {sorted(extra)}")
        if key.get("alg") not in AWS_ALGS:
            problems.append(f"kid {kid} has alg {key.get('alg')!r}, which AWS does not accept")
        try:
            if thumbprint(import_jwk(key)) != kid:
                problems.append(f"kid {kid} is not the key's RFC 7638 thumbprint")
        except KeysError as exc:
            problems.append(f"kid {kid} does not parse: {exc}")
    if len(keys) > 100:
        problems.append(f"{len(keys)} keys: STS was seen to fail beyond 100")
    detail = "; ".join(problems) if problems else f"{len(keys)} keys parse, kids unique"
    return Check("published keys", not problems, detail)
