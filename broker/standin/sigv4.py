"""SigV4 as far as the gate needs it: who signed a request, and whether the signature is right.

Signature verification follows the documented algorithm (canonical request → string to sign →
HMAC chain). The gate only verifies STS query requests (`POST /` with a form body), where there
is exactly one way to canonicalise; everything else is forwarded with only the key id checked.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote, unquote

from broker.standin.query import IncomingRequest

__all__ = [
    "SigV4Authorization",
    "access_key_id",
    "parse_authorization",
    "security_token",
    "signature_matches",
]

ALGORITHM = "AWS4-HMAC-SHA256"
_AUTHORIZATION = re.compile(
    r"^AWS4-HMAC-SHA256\s+Credential=(?P<akid>[^/\s,]+)/(?P<date>\d{8})/(?P<region>[^/]+)/"
    r"(?P<service>[^/]+)/aws4_request\s*,\s*SignedHeaders=(?P<signed>[^,\s]+)\s*,\s*"
    r"Signature=(?P<signature>[0-9a-f]+)\s*$"
)
_CREDENTIAL = re.compile(r"^(?P<akid>[^/]+)/")


@dataclass(frozen=True)
class SigV4Authorization:
    access_key_id: str
    date: str
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str = field(repr=False)

    @property
    def scope(self) -> str:
        return f"{self.date}/{self.region}/{self.service}/aws4_request"


def parse_authorization(header: str | None) -> SigV4Authorization | None:
    """None when there is no Authorization header or it is not SigV4."""
    if header is None:
        return None
    match = _AUTHORIZATION.match(header.strip())
    if match is None:
        return None
    return SigV4Authorization(
        access_key_id=match["akid"],
        date=match["date"],
        region=match["region"],
        service=match["service"],
        signed_headers=tuple(match["signed"].split(";")),
        signature=match["signature"],
    )


def access_key_id(request: IncomingRequest) -> str | None:
    """The signer's access key id, from the Authorization header or a presigned query string."""
    authorization = request.header("authorization")
    if authorization is not None:
        parsed = parse_authorization(authorization)
        if parsed is not None:
            return parsed.access_key_id
        legacy = re.search(r"Credential=([^/\s,]+)/", authorization)
        return None if legacy is None else legacy.group(1)
    for key, value in parse_qsl(request.query_string, keep_blank_values=True):
        if key == "X-Amz-Credential":
            match = _CREDENTIAL.match(value)
            return None if match is None else match["akid"]
    return None


def security_token(request: IncomingRequest) -> str | None:
    """The session token, from its header or a presigned query string."""
    token = request.header("x-amz-security-token")
    if token is not None:
        return token
    for key, value in parse_qsl(request.query_string, keep_blank_values=True):
        if key == "X-Amz-Security-Token":
            return value
    return None


def _canonical_query(query_string: str) -> str:
    if not query_string:
        return ""
    pairs = []
    for part in query_string.split("&"):
        key, _, value = part.partition("=")
        pairs.append((quote(unquote(key), safe="-_.~"), quote(unquote(value), safe="-_.~")))
    return "&".join(f"{key}={value}" for key, value in sorted(pairs))


def _canonical_request(request: IncomingRequest, auth: SigV4Authorization) -> str | None:
    lines = []
    for name in auth.signed_headers:
        value = request.header(name)
        if value is None:
            return None
        lines.append(f"{name}:{' '.join(value.split())}\n")
    payload = request.header("x-amz-content-sha256") or hashlib.sha256(request.body).hexdigest()
    return "\n".join(
        [
            request.method.upper(),
            quote(request.raw_path or "/", safe="/~"),
            _canonical_query(request.query_string),
            "".join(lines),
            ";".join(auth.signed_headers),
            payload,
        ]
    )


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode(), hashlib.sha256).digest()


def signature_matches(request: IncomingRequest, auth: SigV4Authorization, secret: str) -> bool:
    """Recompute the signature with `secret`. False also when a signed header is missing or
    X-Amz-Date is absent."""
    amz_date = request.header("x-amz-date")
    canonical = _canonical_request(request, auth)
    if amz_date is None or canonical is None:
        return False
    string_to_sign = "\n".join(
        [ALGORITHM, amz_date, auth.scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = _hmac(("AWS4" + secret).encode(), auth.date)
    for part in (auth.region, auth.service, "aws4_request"):
        key = _hmac(key, part)
    expected = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, auth.signature)
