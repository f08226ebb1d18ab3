"""The OpenID Connect discovery document, as bytes.

AWS reads `issuer` and `jwks_uri`. The rest satisfies OpenID Connect Discovery 1.0 and strict
validators (authlib's provider-metadata checks, openid-client): like EKS and GitHub Actions we
advertise an implicit-flow, id_token-only provider. There is no interactive login here, so
`authorization_endpoint` answers every request with an OAuth error that says so.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

CLAIMS_SUPPORTED = ("aud", "exp", "iat", "iss", "jti", "nbf", "sub")
JWKS_PATH = "/.well-known/jwks.json"
DISCOVERY_PATH = "/.well-known/openid-configuration"
AUTHORIZE_PATH = "/authorize"


def discovery_document(issuer_url: str, algs: Iterable[str]) -> bytes:
    """`algs` are the algorithms of the keys actually published, so the list never promises a
    signature we cannot make. (OIDC Discovery wants RS256 listed; an ES256-only issuer omits it.)"""
    document = {
        "issuer": issuer_url,
        "jwks_uri": issuer_url + JWKS_PATH,
        "authorization_endpoint": issuer_url + AUTHORIZE_PATH,
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": sorted(set(algs)),
        "grant_types_supported": ["implicit"],
        "scopes_supported": ["openid"],
        "claims_supported": list(CLAIMS_SUPPORTED),
    }
    return json.dumps(document, separators=(",", ":"), sort_keys=False).encode()
