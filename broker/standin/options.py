"""The gate's knobs. Both insecure conveniences must be asked for explicitly."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from broker.standin.idp import IDP_TIMEOUT

__all__ = ["GateOptions"]


@dataclass(frozen=True)
class GateOptions:
    """
    allow_http_issuers: accept `iss` (and `jwks_uri`) over plain http, for a dev issuer on
        `http://127.0.0.1:<port>`. AWS never does; leave it off outside local development.
    credential_lifetime: rewrite the `Expiration` of issued credentials to now + this, and treat
        them as expired after it, so tests can exercise refresh in seconds instead of an hour.
        None keeps what DurationSeconds gives.
    idp_timeout: how long a discovery document or JWKS fetch may take; STS allows 5 s.
    """

    allow_http_issuers: bool = False
    credential_lifetime: timedelta | None = None
    idp_timeout: timedelta = IDP_TIMEOUT

    def __post_init__(self) -> None:
        if self.credential_lifetime is not None and self.credential_lifetime <= timedelta(0):
            raise ValueError("credential_lifetime must be positive")
        if self.idp_timeout <= timedelta(0):
            raise ValueError("idp_timeout must be positive")
