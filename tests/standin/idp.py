"""A throwaway OIDC issuer for negative cases the real issuer will not produce: its own RSA and EC
keys, discovery and JWKS served by uvicorn on loopback, and knobs for misbehaving (wrong
`issuer`, HTTP errors, slowness, cache headers). Tokens are signed with PyJWT."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from broker.standin.serving import ServerThread

AUDIENCE = "fake-aud"
SUBJECT = "tenant:acme:sbx-1"
RSA_KID = "fake-rsa-1"
EC_KID = "fake-ec-1"


def _rsa() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


class FakeIdp:
    def __init__(self) -> None:
        self.rsa_key = _rsa()
        self.ec_key = ec.generate_private_key(ec.SECP256R1())
        self.stranger_key = _rsa()  # never published
        self._server = ServerThread(
            Starlette(
                routes=[
                    Route("/.well-known/openid-configuration", self._discovery),
                    Route("/.well-known/jwks.json", self._jwks),
                ]
            )
        )
        self.reset()

    def reset(self) -> None:
        self.cache_control: str | None = "public, max-age=300"
        self.discovery_issuer: str | None = None
        self.discovery_status = 200
        self.delay = 0.0
        self.extra_keys: list[dict[str, Any]] = []
        self.hits: Counter[str] = Counter()

    def start(self) -> None:
        self._server.start()

    def stop(self) -> None:
        self._server.stop()

    @property
    def issuer(self) -> str:
        return self._server.url

    def _headers(self) -> dict[str, str]:
        return {} if self.cache_control is None else {"cache-control": self.cache_control}

    async def _discovery(self, request: Request) -> Response:
        self.hits["discovery"] += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.discovery_status != 200:
            return Response(status_code=self.discovery_status)
        document = {
            "issuer": self.discovery_issuer or self.issuer,
            "jwks_uri": self.issuer + "/.well-known/jwks.json",
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256", "ES256"],
        }
        return JSONResponse(document, headers=self._headers())

    async def _jwks(self, request: Request) -> Response:
        self.hits["jwks"] += 1
        keys = [
            {**RSAAlgorithm.to_jwk(self.rsa_key.public_key(), as_dict=True), "kid": RSA_KID},
            {**ECAlgorithm.to_jwk(self.ec_key.public_key(), as_dict=True), "kid": EC_KID},
            *self.extra_keys,
        ]
        for key in keys:
            key["use"] = "sig"
        return JSONResponse({"keys": keys}, headers=self._headers())

    def publish(self, key: rsa.RSAPrivateKey, kid: str) -> None:
        self.extra_keys.append({**RSAAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": kid})

    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": AUDIENCE,
            "sub": SUBJECT,
            "iat": now,
            "nbf": now,
            "exp": now + 300,
        }
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def token(
        self,
        claims: dict[str, Any] | None = None,
        *,
        kid: str | None = RSA_KID,
        alg: str = "RS256",
        key: Any = None,
    ) -> str:
        """Signed with the published RSA key unless `key` (or ES* `alg`) says otherwise."""
        if key is None:
            key = self.ec_key if alg.startswith("ES") else self.rsa_key
        headers = {} if kid is None else {"kid": kid}
        return jwt.encode(
            self.claims() if claims is None else claims, key, algorithm=alg, headers=headers
        )
