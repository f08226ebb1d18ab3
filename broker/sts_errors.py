"""STS failures, classified once: recoverable (retry later; cached credentials keep flowing) or
irrecoverable (drop cached credentials; the message says what to fix).

Sources catch botocore's exceptions at the call and raise `classify(...)` from them, so nothing
above a source ever looks at an STS error code again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from broker.errors import CredentialsRejected, CredentialsUnavailable
from keys.botocore_lazy import setup_problem

if TYPE_CHECKING:
    from botocore.exceptions import ClientError

__all__ = ["classify", "setup_failed"]

# STS throttles with token buckets shared by every caller of the account: come back after the
# bucket has refilled, not in the same second as everyone else.
THROTTLED_RETRY_AFTER = timedelta(seconds=10)
# 5xx, network errors and STS failing to reach our JWKS are usually over within seconds.
TRANSIENT_RETRY_AFTER = timedelta(seconds=5)
# STS messages are short; a longer one is not something an operator needs in an error body.
MAX_MESSAGE = 400

_THROTTLING = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
    }
)
_TRANSIENT = frozenset(
    {
        "IDPCommunicationError",
        "InternalFailure",
        "InternalError",
        "InternalServerError",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)
# AWS documents this InvalidIdentityToken message as STS failing to fetch the issuer's JWKS
# (unreachable, slower than 5 s, or throttling STS): transient from our side.
_JWKS_UNREACHABLE = "couldn't retrieve verification key"
# A JWT (three base64url segments, the first a JSON header) must never reach a message.
_JWT = re.compile(r"eyJ[\w-]*\.[\w-]*\.[\w-]*")

_WEB = "AssumeRoleWithWebIdentity"


@dataclass(frozen=True, slots=True)
class _Rule:
    """A hint for an irrecoverable error: the first rule whose fields all match wins."""

    code: str
    hint: str
    action: str | None = None  # only for this STS action
    says: tuple[str, ...] = ()  # only if the STS message contains one of these (lower case)


_RULES = (
    _Rule(
        "AccessDenied",
        "the role's trust policy did not match the token: its Federated principal must be this "
        "issuer's OIDC provider and its <issuer>:aud and <issuer>:sub conditions must equal the "
        "token's aud and sub exactly (StringEquals, case-sensitive)",
        action=_WEB,
    ),
    _Rule(
        "AccessDenied",
        "the role's trust policy did not allow the caller: it must name the broker's role (for a "
        "second hop, the first role) as Principal and require sts:ExternalId equal to this "
        "integration's external id, and the caller needs sts:AssumeRole on the role",
    ),
    _Rule(
        "InvalidIdentityToken",
        "the role's account has no IAM OIDC provider for this issuer: create one whose URL is "
        "exactly the issuer URL (https, no trailing slash)",
        says=("no openidconnect provider",),
    ),
    _Rule(
        "InvalidIdentityToken",
        "the token's aud is not a client ID of the IAM OIDC provider: add the tenant's audience "
        "to the provider's client ID list",
        says=("audience", "claim: aud"),
    ),
    _Rule(
        "InvalidIdentityToken",
        "STS could not validate the token: check that an IAM OIDC provider exists for the issuer, "
        "that the token's aud is one of its client IDs, and that the signing key is published in "
        "the JWKS",
    ),
    _Rule(
        "ExpiredTokenException",
        "the token or the caller's credentials had expired when STS checked them: check the "
        "broker host's clock (NTP) and that tokens are minted just before the exchange",
    ),
    _Rule(
        "IDPRejectedClaim",
        "the identity provider rejected the token's claims: check the tenant and its token "
        "claims, then retry",
    ),
    _Rule(
        "ValidationError",
        "role chaining caps sessions at 3600 s: set the integration's session duration to at "
        "most 3600",
        says=("role chaining",),
    ),
    _Rule(
        "ValidationError",
        "the session duration exceeds the role's MaxSessionDuration: raise it (aws iam "
        "update-role --max-session-duration) or lower the integration's session duration",
        says=("maxsessionduration",),
    ),
    _Rule(
        "ValidationError",
        r"the session name must be 2-64 characters of [\w+=,.@-]",
        says=("rolesessionname",),
    ),
    _Rule(
        "ValidationError",
        "a request parameter was rejected: check the session duration (900-43200 s, at most the "
        "role's MaxSessionDuration, at most 3600 when chaining), the session name and the "
        "session policy",
    ),
    _Rule(
        "MalformedPolicyDocument",
        "the session policy is not a valid IAM policy: fix the integration's or the sandbox's "
        "session_policy (JSON, Version 2012-10-17, at most 2048 characters)",
    ),
    _Rule(
        "PackedPolicyTooLarge",
        "the session policy and session tags exceed STS's packed size limit: shorten the "
        "session policy or drop session tags",
    ),
    _Rule(
        "RegionDisabledException",
        "STS is not activated in the integration's region for the role's account: activate the "
        "region (IAM > Account settings > STS endpoints) or use another region",
    ),
    _Rule(
        "InvalidClientTokenId",
        "AWS does not recognise the caller's access key: the base (instance role) credentials "
        "are invalid or revoked, or their region is not enabled for the account",
    ),
)
_DEFAULT_HINT = "AWS refused the request and retrying will not help; the STS message says why"


def classify(
    exc: Exception, *, action: str, role_arn: str
) -> CredentialsUnavailable | CredentialsRejected:
    """Turn an exception raised by an STS call into the broker's error. Raise it `from exc`."""
    # An STS call has failed, so botocore is loaded already (see keys.botocore_lazy).
    from botocore import exceptions as boto  # noqa: PLC0415

    where = f"sts:{action} for {role_arn}"
    if isinstance(exc, boto.ClientError):
        return _from_client_error(exc, action=action, where=where)
    if isinstance(exc, boto.ParamValidationError):
        return CredentialsRejected(
            f"{where} was not sent: {_scrub(str(exc))}",
            hint="a request parameter is invalid: check the session name (2-64 characters of "
            r"[\w+=,.@-]), the session duration (900-43200 s) and the session policy",
        )
    # Connect/read timeouts, refused or dropped connections, TLS failures: the network, not AWS.
    return CredentialsUnavailable(
        f"{where} failed: could not reach STS ({type(exc).__name__}: {_scrub(str(exc))})",
        retry_after=_seconds(TRANSIENT_RETRY_AFTER),
    )


def setup_failed(exc: Exception) -> CredentialsUnavailable:
    """The error for an SDK that could not make its session or client: see
    keys.botocore_lazy.setup_problem."""
    return CredentialsUnavailable(
        _scrub(setup_problem(exc, "STS")), retry_after=_seconds(TRANSIENT_RETRY_AFTER)
    )


def _from_client_error(
    exc: ClientError, *, action: str, where: str
) -> CredentialsUnavailable | CredentialsRejected:
    error = exc.response.get("Error", {})
    code = str(error.get("Code") or "Unknown")
    message = _scrub(str(error.get("Message") or ""))
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    text = f"{where} failed: {code}: {message}" if message else f"{where} failed: {code}"

    if code in _THROTTLING or status == 429:
        return CredentialsUnavailable(
            text, sts_code=code, retry_after=_seconds(THROTTLED_RETRY_AFTER)
        )
    if code in _TRANSIENT or status >= 500:
        return CredentialsUnavailable(
            text, sts_code=code, retry_after=_seconds(TRANSIENT_RETRY_AFTER)
        )
    if code == "InvalidIdentityToken" and _JWKS_UNREACHABLE in message.lower():
        return CredentialsUnavailable(
            f"{text} (STS could not fetch the issuer's JWKS: it must be reachable from the public "
            "internet, answer within 5 s and allow caching)",
            sts_code=code,
            retry_after=_seconds(TRANSIENT_RETRY_AFTER),
        )
    return CredentialsRejected(text, sts_code=code, hint=_hint(code, message, action))


def _hint(code: str, message: str, action: str) -> str:
    lower = message.lower()
    for rule in _RULES:
        if (
            rule.code == code
            and rule.action in (None, action)
            and (not rule.says or any(fragment in lower for fragment in rule.says))
        ):
            return rule.hint
    return _DEFAULT_HINT


def _scrub(text: str) -> str:
    text = _JWT.sub("<token>", text)
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"


def _seconds(delta: timedelta) -> int:
    return int(delta.total_seconds())
