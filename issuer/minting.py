"""Claims for a tenant's token, signed by the active key as a compact JWS."""

from __future__ import annotations

import base64
import json
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from issuer.audit import AuditEvent, AuditLog
from issuer.errors import BadRequest
from issuer.keyring import KeyRing
from issuer.tenants import TenantStore, audience_for, validate_slug

# sub comes back from STS as SubjectFromWebIdentityToken, which AWS's model bounds to 6-255.
SUB_MIN, SUB_MAX = 6, 255
# The caller's subject (a sandbox or agent id) lands in CloudTrail: keep it to id-like characters.
SUBJECT_RE = re.compile(r"^[A-Za-z0-9._@:+=-]{1,200}$")
# nbf sits a little before iat so a verifier whose clock runs slightly behind ours still accepts
# the token at once (GitHub's tokens use 600 s; we need far less, the token is used at once).
NOT_BEFORE_SKEW = timedelta(seconds=30)


@dataclass(frozen=True, slots=True)
class MintedToken:
    token: str = field(repr=False)
    expires_at: datetime
    kid: str
    subject: str
    audience: str
    alg: str


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


class TokenMinter:
    def __init__(
        self,
        *,
        issuer_url: str,
        keyring: KeyRing,
        tenants: TenantStore,
        clock: Callable[[], datetime],
        default_ttl: timedelta,
        max_ttl: timedelta,
        min_ttl: timedelta,
        audit: AuditLog,
    ) -> None:
        self._audit = audit
        self._issuer_url = issuer_url
        self._keyring = keyring
        self._tenants = tenants
        self._clock = clock
        self._default_ttl = default_ttl
        self._max_ttl = max_ttl
        self._min_ttl = min_ttl
        self._headers: dict[tuple[str, str], str] = {}

    def ttl_range(self) -> tuple[int, int]:
        return int(self._min_ttl.total_seconds()), int(self._max_ttl.total_seconds())

    async def mint(
        self, tenant: str, subject: str | None = None, ttl_seconds: int | None = None
    ) -> MintedToken:
        """Raises InvalidSlug/UnknownTenant for the tenant, BadRequest for subject or ttl,
        Unavailable when no key can sign."""
        tenant = validate_slug(tenant)
        ttl = self._ttl(ttl_seconds)
        sub = self._subject(tenant, subject)
        await self._tenants.get(tenant)  # UnknownTenant, InvalidSlug
        signer = self._keyring.signer()
        issued = int(self._clock().timestamp())  # integers: STS rejects float timestamps
        expires = issued + int(ttl.total_seconds())
        audience = audience_for(tenant)
        claims = {
            "iss": self._issuer_url,
            "aud": audience,
            "sub": sub,
            "iat": issued,
            "nbf": issued - int(NOT_BEFORE_SKEW.total_seconds()),
            "exp": expires,
            "jti": secrets.token_urlsafe(16),
        }
        header = self._header(signer.kid, signer.alg.value)
        signing_input = f"{header}.{b64url(_json(claims))}"
        signature = await signer.sign(signing_input.encode("ascii"))
        # Durable before the token leaves; the token itself is never recorded.
        await self._audit.write(
            AuditEvent(
                event="mint",
                outcome="ok",
                tenant=tenant,
                expiration=datetime.fromtimestamp(expires, UTC),
                detail=f"sub={sub} kid={signer.kid} jti={claims['jti']}",
            )
        )
        return MintedToken(
            token=f"{signing_input}.{b64url(signature)}",
            expires_at=datetime.fromtimestamp(expires, UTC),
            kid=signer.kid,
            subject=sub,
            audience=audience,
            alg=signer.alg.value,
        )

    def _header(self, kid: str, alg: str) -> str:
        encoded = self._headers.get((kid, alg))
        if encoded is None:
            encoded = b64url(_json({"alg": alg, "kid": kid, "typ": "JWT"}))
            self._headers = {(kid, alg): encoded}  # one active key at a time
        return encoded

    def _ttl(self, ttl_seconds: int | None) -> timedelta:
        if ttl_seconds is None:
            return self._default_ttl
        low, high = self.ttl_range()
        if isinstance(ttl_seconds, bool) or not isinstance(ttl_seconds, int):
            raise BadRequest(
                f"ttl_seconds must be an integer number of seconds from {low} to {high}"
            )
        if not low <= ttl_seconds <= high:
            raise BadRequest(
                f"ttl_seconds={ttl_seconds} is out of range; allowed: {low} to {high} seconds"
            )
        return timedelta(seconds=ttl_seconds)

    @staticmethod
    def _subject(tenant: str, subject: str | None) -> str:
        if subject is None or subject == "":
            return f"tenant:{tenant}"
        # fullmatch, not match: SUBJECT_RE's "$" also matches before a final newline.
        if not isinstance(subject, str) or not SUBJECT_RE.fullmatch(subject):
            raise BadRequest(
                "subject must be 1-200 characters of letters, digits and . _ @ : + "
                "= - (a sandbox or agent id)"
            )
        sub = f"tenant:{tenant}:{subject}"
        if not SUB_MIN <= len(sub) <= SUB_MAX:
            raise BadRequest(
                f"the token subject 'tenant:<slug>:<subject>' must be {SUB_MIN}-"
                f"{SUB_MAX} characters; shorten subject"
            )
        return sub
