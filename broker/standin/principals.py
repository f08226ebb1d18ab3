"""Who holds which access key: sessions the gate saw STS issue, and principals an operator
registered (EC2 instance-role credentials served by an IMDS stand-in), and how a request's
signer is authenticated against them."""

from __future__ import annotations

import threading
from datetime import timedelta

from broker.standin.errors import (
    expired_token,
    invalid_client_token_id,
    missing_authentication_token,
    signature_does_not_match,
)
from broker.standin.model import Clock, Principal
from broker.standin.query import IncomingRequest
from broker.standin.sigv4 import (
    access_key_id,
    parse_authorization,
    security_token,
    signature_matches,
)

__all__ = ["PrincipalRegistry"]

# Sessions long expired are still remembered for a while so that a caller using them hears
# "expired" rather than "invalid", as from AWS; beyond this they are forgotten to bound memory.
FORGET_AFTER = timedelta(hours=12)
PRUNE_ABOVE = 10_000


class PrincipalRegistry:
    """In-memory and per gate. Thread-safe: the admin API and the gate may run concurrently."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._principals: dict[str, Principal] = {}
        self._lock = threading.Lock()

    def record(self, principal: Principal) -> None:
        with self._lock:
            self._principals[principal.access_key_id] = principal
            if len(self._principals) > PRUNE_ABOVE:
                horizon = self._clock() - FORGET_AFTER
                self._principals = {
                    key: value
                    for key, value in self._principals.items()
                    if value.expires_at is None or value.expires_at > horizon
                }

    def forget(self, access_key_id: str) -> bool:
        with self._lock:
            return self._principals.pop(access_key_id, None) is not None

    def get(self, access_key_id: str) -> Principal | None:
        with self._lock:
            return self._principals.get(access_key_id)

    def authenticate(self, request: IncomingRequest, *, verify_signature: bool) -> Principal:
        """The principal that signed `request`, or the StsError AWS would answer with:
        MissingAuthenticationToken, InvalidClientTokenId (unknown key, wrong session token),
        ExpiredToken, SignatureDoesNotMatch (checked only when the secret is known)."""
        key = access_key_id(request)
        if key is None:
            raise missing_authentication_token()
        principal = self.get(key)
        if principal is None:
            raise invalid_client_token_id()
        self.check(principal, request, verify_signature=verify_signature)
        return principal

    def check(
        self, principal: Principal, request: IncomingRequest, *, verify_signature: bool
    ) -> None:
        token = principal.session_token
        if token is not None and security_token(request) != token:
            raise invalid_client_token_id()
        if principal.expires_at is not None and self._clock() >= principal.expires_at:
            raise expired_token()
        if verify_signature and principal.secret_access_key is not None:
            auth = parse_authorization(request.header("authorization"))
            if auth is None or not signature_matches(request, auth, principal.secret_access_key):
                raise signature_does_not_match()
