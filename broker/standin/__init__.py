"""A strict local stand-in for AWS STS: moto's server behind a gate that checks what moto does
not (web identity tokens against the issuer's JWKS, trust policies, ExternalId, role chaining)
and answers with AWS's error codes. For tests and `make run`; production talks to real STS.

    StandIn        moto + gate in this process (tests)
    create_app     the gate as an ASGI app in front of a given moto URL
    GateOptions    allow_http_issuers, credential_lifetime, idp_timeout
    python -m broker.standin --port 4566 [--credential-lifetime S] [--allow-http-issuers]
"""

from broker.standin.app import create_app
from broker.standin.faults import FaultMode
from broker.standin.launcher import StandIn
from broker.standin.options import GateOptions

__all__ = ["FaultMode", "GateOptions", "StandIn", "create_app"]
