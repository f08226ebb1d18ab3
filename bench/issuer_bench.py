"""The issuer's figures: serving the published documents, and minting tokens.

jwks, discovery  req/s of the real public listener ÷ req/s of the bare app (same request).
mint             req/s of POST /v1/tokens ÷ the serial limit 1/(1/sign_rate + 1/bare_rate):
                 what one core could do if a request cost exactly one signature plus the bare
                 HTTP round trip. The gap is everything else on the minting path.
"""

from __future__ import annotations

import json
from typing import Any

from bench.cpustat import Interference
from bench.errors import BenchError
from bench.loadgen import HttpRequest, LoadResult
from bench.registry import Benchmark, Session
from bench.report import Figure
from bench.servers import Warrant, call_json
from issuer.discovery import DISCOVERY_PATH, JWKS_PATH

__all__ = ["BENCHMARKS", "MINT_BODY", "TENANT", "document_run", "mint_run"]

DOCUMENT_TARGET = 0.9
MINT_TARGET = 0.85
MINT_ALGS = ("RS256", "ES256")
TENANT = "acme"
MINT_BODY = json.dumps({"tenant": TENANT}, separators=(",", ":"))
# Set-up requests before a measurement; a healthy local server answers in milliseconds.


def jwks(session: Session) -> list[Figure]:
    return [_document(session, "jwks", JWKS_PATH)]


def discovery(session: Session) -> list[Figure]:
    return [_document(session, "discovery", DISCOVERY_PATH)]


def mint(session: Session) -> list[Figure]:
    return [_mint(session, alg) for alg in MINT_ALGS]


BENCHMARKS = (
    Benchmark("jwks", "GET /.well-known/jwks.json ÷ the bare app", jwks),
    Benchmark("discovery", "GET /.well-known/openid-configuration ÷ the bare app", discovery),
    Benchmark(
        "mint",
        "POST /v1/tokens (RS256, then ES256) ÷ the serial limit of signing + bare HTTP",
        mint,
    ),
)


def _document(session: Session, name: str, path: str) -> Figure:
    warrant = session.warrant("RS256")
    request = HttpRequest(warrant.public_url + path)
    call_json(warrant.server, request, expect=200)
    bare = session.baseline(request)
    run = session.load(name, request, warrant.server)
    return Figure(
        name=name,
        measured=run.requests_per_second,
        baseline=bare.requests_per_second,
        baseline_label="bare GET",
        target=DOCUMENT_TARGET,
        errors=run.errors + bare.errors,
        others_pct=_worst(run.interference, bare.interference),
    )


def document_run(session: Session, name: str, path: str) -> LoadResult:
    """The load run `name` of GET `path` on the public listener: this session's, or made now."""
    run = session.run_named(name)
    if run is not None:
        return run
    warrant = session.warrant("RS256")
    request = HttpRequest(warrant.public_url + path)
    call_json(warrant.server, request, expect=200)
    return session.load(name, request, warrant.server)


def mint_run(session: Session, alg: str) -> LoadResult:
    """The load run of POST /v1/tokens signing with `alg`: this session's, or made now."""
    run = session.run_named(f"mint {alg}")
    if run is not None:
        return run
    warrant = session.warrant(alg)
    request = _mint_request(warrant)
    _add_tenant(warrant)
    _minted(warrant, request, f"mint {alg}")
    return session.load(f"mint {alg}", request, warrant.server)


def _mint_request(warrant: Warrant) -> HttpRequest:
    return HttpRequest(
        f"{warrant.internal_url}/v1/tokens",
        method="POST",
        body=MINT_BODY,
        headers={
            "Content-Type": "application/json",
            "Authorization": f"Bearer {warrant.api_key('agent')}",
        },
    )


def _minted(warrant: Warrant, request: HttpRequest, name: str) -> dict[str, Any]:
    """One mint, checked: the answer has a token and its kid."""
    token = call_json(warrant.server, request, expect=200)
    if not isinstance(token.get("token"), str) or not isinstance(token.get("kid"), str):
        raise BenchError(f"{name}: POST /v1/tokens answered without a token: {token}")
    return token


def _mint(session: Session, alg: str) -> Figure:
    name = f"mint {alg}"
    warrant = session.warrant(alg)
    request = _mint_request(warrant)
    _add_tenant(warrant)
    token = _minted(warrant, request, name)
    # The signing input of a real token: the same header and claims sizes the server signs.
    signing_input = token["token"].rsplit(".", 1)[0].encode("ascii")
    sign = session.sign_rate(f"sign {alg}", warrant, signing_input, token["kid"])
    bare = session.baseline(request)
    run = session.load(name, request, warrant.server)
    limit = 1 / (1 / sign.rate + 1 / bare.requests_per_second)
    return Figure(
        name=name,
        measured=run.requests_per_second,
        baseline=limit,
        baseline_label="serial limit",
        target=MINT_TARGET,
        errors=run.errors + bare.errors,
        others_pct=_worst(run.interference, bare.interference, sign.interference),
        note=(
            f"serial limit = 1/(1/{sign.rate:,.0f} sign/s + 1/{bare.requests_per_second:,.0f} "
            f"bare POST req/s); signing alone would allow {sign.rate:,.0f}/s"
        ),
    )


def _worst(*noise: Interference | None) -> float:
    return max((n.worst_pct for n in noise if n is not None), default=0.0)


def _add_tenant(warrant: Warrant) -> None:
    url = f"{warrant.internal_url}/v1/tenants"
    admin = {"Authorization": f"Bearer {warrant.api_key('admin')}"}
    body = json.dumps({"slug": TENANT, "name": "Acme Corp"})
    # 409: already there (the same server measured twice); either way the tenant exists.
    call_json(warrant.server, HttpRequest(url, "POST", body, admin), expect=(201, 409))
