"""The AWS query protocol as STS speaks it, and the parameter checks STS's API model makes before
anything else (lengths, patterns, ranges; AWS-facts §2).

botocore validates most of these client-side, so these checks matter for callers that build
requests by hand, or that turn off `parameter_validation`, or that use another SDK.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from broker.standin.errors import StsError, invalid_parameter_value, validation_error
from broker.standin.model import RoleArn

__all__ = [
    "ASSUME_ROLE",
    "ASSUME_ROLE_WITH_WEB_IDENTITY",
    "IncomingRequest",
    "QueryRequest",
    "check_assume_role_params",
    "check_web_identity_params",
    "duration_seconds",
    "external_id",
    "role_arn",
    "role_session_name",
    "web_identity_token",
]

ASSUME_ROLE = "AssumeRole"
ASSUME_ROLE_WITH_WEB_IDENTITY = "AssumeRoleWithWebIdentity"

DEFAULT_DURATION = 3600
MIN_DURATION, MAX_DURATION = 900, 43200
SESSION_NAME = re.compile(r"[\w+=,.@-]{2,64}", re.ASCII)
EXTERNAL_ID = re.compile(r"[\w+=,.@:/-]{2,1224}", re.ASCII)
SOURCE_IDENTITY = re.compile(r"[\w+=,.@-]{2,64}", re.ASCII)
TOKEN_MIN, TOKEN_MAX = 4, 20000
ROLE_ARN_MIN, ROLE_ARN_MAX = 20, 2048
POLICY_MAX = 2048
POLICY_ARNS_MAX = 10

_COMMON = frozenset(
    {"Action", "Version", "RoleArn", "RoleSessionName", "Policy", "DurationSeconds"}
)
_WEB_IDENTITY_PARAMS = _COMMON | {"WebIdentityToken", "ProviderId"}
_ASSUME_ROLE_PARAMS = _COMMON | {
    "ExternalId",
    "SerialNumber",
    "TokenCode",
    "SourceIdentity",
}
_POLICY_ARN = re.compile(r"PolicyArns\.member\.\d+\.arn")
_ASSUME_ROLE_LISTS = re.compile(
    r"Tags\.member\.\d+\.(?:Key|Value)|TransitiveTagKeys\.member\.\d+"
    r"|ProvidedContexts\.member\.\d+\.(?:ProviderArn|ContextAssertion)"
)
_NO_LISTS = re.compile(r"(?!)")  # matches nothing: web identity takes no tag lists
# Presigned requests carry their SigV4 fields in the query string.
_SIGV4_QUERY = re.compile(r"X-Amz-[A-Za-z-]+")


@dataclass(frozen=True)
class IncomingRequest:
    """One HTTP request as received, before any interpretation; what gets forwarded to moto."""

    method: str
    raw_path: str
    query_string: str
    headers: tuple[tuple[str, str], ...] = field(repr=False)
    body: bytes = field(repr=False)

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        values = [value for key, value in self.headers if key.lower() == lowered]
        return ",".join(values) if values else None


@dataclass(frozen=True)
class QueryRequest:
    """The form parameters of a query-protocol call (body and query string; the body wins)."""

    action: str | None
    params: Mapping[str, str] = field(repr=False)

    @classmethod
    def parse(cls, request: IncomingRequest) -> QueryRequest:
        params: dict[str, str] = {}
        for key, value in parse_qsl(request.query_string, keep_blank_values=True):
            params.setdefault(key, value)
        content_type = (request.header("content-type") or "").lower()
        if request.body and content_type.startswith("application/x-www-form-urlencoded"):
            body = request.body.decode("utf-8", errors="replace")
            for key, value in parse_qsl(body, keep_blank_values=True):
                params[key] = value
        return cls(params.get("Action"), params)

    def get(self, name: str) -> str | None:
        return self.params.get(name)


def _constraint(value: str | None, member: str, constraint: str) -> StsError:
    shown = "null" if value is None else f"'{value}'"
    return validation_error(
        f"1 validation error detected: Value {shown} at '{member}' failed to satisfy "
        f"constraint: {constraint}"
    )


def _reject_unknown(query: QueryRequest, allowed: frozenset[str], lists: re.Pattern[str]) -> None:
    for name in query.params:
        if name in allowed or _SIGV4_QUERY.fullmatch(name):
            continue
        if _POLICY_ARN.fullmatch(name) or lists.fullmatch(name):
            continue
        raise validation_error(f"{query.action} does not accept the parameter {name}")


def _check_policies(query: QueryRequest) -> None:
    policy = query.get("Policy")
    if policy is not None and not 1 <= len(policy) <= POLICY_MAX:
        raise _constraint(
            None, "policy", f"Member must have length less than or equal to {POLICY_MAX}"
        )
    arns = [name for name in query.params if _POLICY_ARN.fullmatch(name)]
    if len(arns) > POLICY_ARNS_MAX:
        raise _constraint(
            None, "policyArns", f"Member must have length less than or equal to {POLICY_ARNS_MAX}"
        )


def check_web_identity_params(query: QueryRequest) -> None:
    """AssumeRoleWithWebIdentity has no Tags, TransitiveTagKeys, ExternalId or SourceIdentity:
    those come only from the token, and a broker that sends them is wrong (aws-facts §2, §6.6)."""
    _reject_unknown(query, _WEB_IDENTITY_PARAMS, _NO_LISTS)
    provider_id = query.get("ProviderId")
    if provider_id is not None:
        raise invalid_parameter_value(
            "ProviderId is only for OAuth 2.0 access tokens from www.amazon.com and "
            "graph.facebook.com; do not send it with an OpenID Connect ID token"
        )
    _check_policies(query)


def check_assume_role_params(query: QueryRequest) -> None:
    _reject_unknown(query, _ASSUME_ROLE_PARAMS, _ASSUME_ROLE_LISTS)
    _check_policies(query)
    source_identity = query.get("SourceIdentity")
    if source_identity is not None and (
        not SOURCE_IDENTITY.fullmatch(source_identity) or source_identity.startswith("aws:")
    ):
        raise _constraint(
            source_identity,
            "sourceIdentity",
            r"Member must satisfy regular expression pattern: [\w+=,.@-]*",
        )


def role_arn(query: QueryRequest) -> RoleArn:
    value = query.get("RoleArn")
    if value is None:
        raise _constraint(None, "roleArn", "Member must not be null")
    if not ROLE_ARN_MIN <= len(value) <= ROLE_ARN_MAX:
        raise _constraint(
            value, "roleArn", f"Member must have length between {ROLE_ARN_MIN} and {ROLE_ARN_MAX}"
        )
    parsed = RoleArn.parse(value)
    if parsed is None:
        raise validation_error(f"{value} is invalid")
    return parsed


def role_session_name(query: QueryRequest) -> str:
    value = query.get("RoleSessionName")
    if value is None:
        raise _constraint(None, "roleSessionName", "Member must not be null")
    if not 2 <= len(value) <= 64:
        raise _constraint(value, "roleSessionName", "Member must have length between 2 and 64")
    if not SESSION_NAME.fullmatch(value):
        raise _constraint(
            value,
            "roleSessionName",
            r"Member must satisfy regular expression pattern: [\w+=,.@-]*",
        )
    return value


def duration_seconds(query: QueryRequest) -> int:
    value = query.get("DurationSeconds")
    if value is None:
        return DEFAULT_DURATION
    try:
        seconds = int(value)
    except ValueError:
        raise _constraint(value, "durationSeconds", "Member must be an integer") from None
    if seconds < MIN_DURATION:
        raise _constraint(
            value,
            "durationSeconds",
            f"Member must have value greater than or equal to {MIN_DURATION}",
        )
    if seconds > MAX_DURATION:
        raise _constraint(
            value, "durationSeconds", f"Member must have value less than or equal to {MAX_DURATION}"
        )
    return seconds


def external_id(query: QueryRequest) -> str | None:
    value = query.get("ExternalId")
    if value is None:
        return None
    if not 2 <= len(value) <= 1224:
        raise _constraint(value, "externalId", "Member must have length between 2 and 1224")
    if not EXTERNAL_ID.fullmatch(value):
        raise _constraint(
            value, "externalId", r"Member must satisfy regular expression pattern: [\w+=,.@:\/-]*"
        )
    return value


def web_identity_token(query: QueryRequest) -> str:
    """The token's value is never echoed, unlike other parameters: it is a credential."""
    value = query.get("WebIdentityToken")
    if value is None:
        raise _constraint(None, "webIdentityToken", "Member must not be null")
    if not TOKEN_MIN <= len(value) <= TOKEN_MAX:
        raise validation_error(
            "1 validation error detected: Value at 'webIdentityToken' failed to satisfy "
            f"constraint: Member must have length between {TOKEN_MIN} and {TOKEN_MAX}"
        )
    return value
