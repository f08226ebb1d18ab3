"""Warrant beside a peer: panva's oidc-provider (bench.oidc_peer), loaded exactly as Warrant is
(same wrk, same connections and durations, pinned to the same server CPU).

jwks, discovery vs oidc-provider   Warrant's req/s of the document (the `jwks` / `discovery` run
                                   of this session, or one made now) ÷ the peer's, GET /jwks and
                                   GET /.well-known/openid-configuration.
mint RS256 vs oidc-provider        Warrant's POST /v1/tokens (RS256, the `mint RS256` run) ÷ the
                                   peer's POST /token (client_credentials, RS256 JWT access
                                   token for aud acme-oidc-service, 300 s, as Warrant's).
"""

from __future__ import annotations

import base64
import json
from typing import Any

from bench.cpustat import Interference
from bench.errors import BenchError
from bench.issuer_bench import document_run, mint_run
from bench.loadgen import HttpRequest, LoadResult
from bench.oidc_peer import (
    AUDIENCE,
    DISCOVERY_PATH,
    JWKS_PATH,
    Peer,
    PeerUnavailable,
    peer_server,
    prepare,
)
from bench.registry import Benchmark, Session
from bench.report import Figure
from bench.servers import call_json
from issuer.discovery import DISCOVERY_PATH as OUR_DISCOVERY_PATH
from issuer.discovery import JWKS_PATH as OUR_JWKS_PATH

__all__ = ["BENCHMARKS"]

DOCUMENT_TARGET = 2.0  # Warrant's JWKS and discovery req/s ÷ the peer's
MINT_TARGET = 1.5  # Warrant's minting req/s ÷ the peer's
MINT_ALG = "RS256"  # the peer signs RS256 with RSA-2048, as Warrant's default key


def peer(session: Session) -> list[Figure]:
    try:
        node, version = prepare()
    except PeerUnavailable as exc:
        session.skip("peer", str(exc))
        return []
    ours = {
        "jwks": document_run(session, "jwks", OUR_JWKS_PATH),
        "discovery": document_run(session, "discovery", OUR_DISCOVERY_PATH),
        f"mint {MINT_ALG}": mint_run(session, MINT_ALG),
    }
    with peer_server(node, version, cpu=session.cpus.server, workdir=session.workdir) as p:
        session.progress(f"peer: {p.label} at {p.url} (bench/peer/server.mjs)")
        requests = {
            "jwks": p.document(JWKS_PATH),
            "discovery": p.document(DISCOVERY_PATH),
            f"mint {MINT_ALG}": p.token_request(),
        }
        _check(p, requests)
        theirs = {
            name: session.load(f"{p.label} {name}", request, p.server)
            for name, request in requests.items()
        }
    return [_figure(name, ours[name], theirs[name], p.label) for name in ours]


def _figure(name: str, ours: LoadResult, theirs: LoadResult, label: str) -> Figure:
    minting = name.startswith("mint")
    return Figure(
        name=f"{name} vs oidc-provider",
        measured=ours.requests_per_second,
        baseline=theirs.requests_per_second,
        baseline_label=label,
        target=MINT_TARGET if minting else DOCUMENT_TARGET,
        errors=ours.errors + theirs.errors,
        others_pct=_worst(ours.interference, theirs.interference),
        group=name,
        peer=True,
        note=_MINT_NOTE if minting else _DOCUMENT_NOTE,
    )


_DOCUMENT_NOTE = (
    "Warrant's load run of this document on its public listener (the one its own figure uses, "
    "or made here when that benchmark did not run) ÷ oidc-provider (Node.js, koa; "
    "bench/peer/server.mjs, NODE_ENV=production, one process) serving its own, pinned to the "
    "same server CPU"
)
_MINT_NOTE = (
    "Warrant: POST /v1/tokens with an agent API key, RS256 (RSA-2048), one fsynced audit "
    "record per token. oidc-provider: POST /token grant_type=client_credentials with HTTP Basic "
    "client authentication, an RS256 (RSA-2048) JWT access token for aud acme-oidc-service "
    "valid 300 s (resource indicators), nothing stored or audited"
)


def _check(peer: Peer, requests: dict[str, HttpRequest]) -> None:
    """Each request answers 200 before it is loaded, and the token is the one compared."""
    for name, request in requests.items():
        answer = call_json(peer.server, request, label=peer.label)
        if name.startswith("mint"):
            _check_token(peer, answer)
        elif name == "discovery" and answer.get("issuer") != peer.url:
            raise BenchError(
                f"{peer.label}'s discovery document names issuer {answer.get('issuer')}"
            )


def _check_token(peer: Peer, answer: dict[str, Any]) -> None:
    token = answer.get("access_token")
    if not isinstance(token, str) or token.count(".") != 2:
        raise BenchError(f"{peer.label} answered POST /token without a JWT: {answer}")
    header, claims = (_segment(part) for part in token.split(".")[:2])
    if header.get("alg") != MINT_ALG or claims.get("aud") != AUDIENCE:
        raise BenchError(
            f"{peer.label} minted alg {header.get('alg')} aud {claims.get('aud')}, "
            f"expected {MINT_ALG} {AUDIENCE}"
        )


def _segment(part: str) -> dict[str, Any]:
    value = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return value if isinstance(value, dict) else {}


def _worst(*noise: Interference | None) -> float:
    return max((n.worst_pct for n in noise if n is not None), default=0.0)


BENCHMARKS = (
    Benchmark(
        "peer",
        "JWKS, discovery and RS256 minting req/s ÷ panva's oidc-provider (Node.js), same load",
        peer,
    ),
)
