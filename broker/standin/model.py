"""The stand-in's data: who is calling, what IAM holds, what STS issued. Frozen, secret-free reprs.

Everything the gate learns from IAM (providers, roles) is read fresh from moto on each request, so
a test that edits a trust policy sees the change at once, as it would in AWS (modulo IAM's
eventual consistency, which the stand-in does not model).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "Clock",
    "IssuedCredentials",
    "OidcProvider",
    "Principal",
    "Role",
    "RoleArn",
    "utc_now",
]

Clock = Callable[[], datetime]

_ROLE_ARN = re.compile(
    r"^arn:(?P<partition>aws[a-z-]*):iam::(?P<account>\d{12}):role/(?P<rest>.+)$"
)
_ASSUMED_ROLE_ARN = re.compile(
    r"^arn:(?P<partition>aws[a-z-]*):sts::(?P<account>\d{12}):assumed-role/(?P<role>[^/]+)/.+$"
)
_ACCOUNT_IN_ARN = re.compile(r"^arn:(?P<partition>aws[a-z-]*):(?:iam|sts)::(?P<account>\d{12}):")


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class RoleArn:
    """`arn:<partition>:iam::<account>:role/<path/>name`, parsed."""

    arn: str
    partition: str
    account_id: str
    name: str

    @classmethod
    def parse(cls, arn: str) -> RoleArn | None:
        match = _ROLE_ARN.match(arn)
        if match is None:
            return None
        name = match["rest"].rsplit("/", 1)[-1]
        if not name:
            return None
        return cls(arn, match["partition"], match["account"], name)

    @property
    def account_root(self) -> str:
        return f"arn:{self.partition}:iam::{self.account_id}:root"


@dataclass(frozen=True)
class OidcProvider:
    """An IAM OIDC identity provider. `url` is what IAM stores and returns: the registered URL
    without its scheme, which is also the prefix of the trust-policy condition keys."""

    arn: str
    url: str
    client_ids: tuple[str, ...]


@dataclass(frozen=True)
class Role:
    arn: RoleArn
    trust_policy: Mapping[str, Any] = field(repr=False)
    max_session_duration: int


@dataclass(frozen=True)
class Principal:
    """A caller the gate can authenticate by access key id.

    `role_session` marks credentials that STS issued for a role (AssumeRole*, which the gate saw);
    using them to assume a role again is role chaining. Principals registered through the admin
    API model EC2 instance-role credentials from IMDS, which AWS does not count as chaining.
    The secret and session token, when known, let the gate check the SigV4 signature and token.
    """

    access_key_id: str
    arn: str
    role_arn: str | None
    role_session: bool
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    expires_at: datetime | None = None

    @property
    def account_id(self) -> str | None:
        match = _ACCOUNT_IN_ARN.match(self.arn)
        return None if match is None else match["account"]

    @property
    def partition(self) -> str:
        match = _ACCOUNT_IN_ARN.match(self.arn)
        return "aws" if match is None else match["partition"]

    @staticmethod
    def role_arn_of(arn: str) -> str | None:
        """The role behind an assumed-role session ARN. The session ARN drops the role's path, so
        this is only right for roles at path `/`; callers that know the real ARN pass it."""
        match = _ASSUMED_ROLE_ARN.match(arn)
        if match is None:
            return None
        return f"arn:{match['partition']}:iam::{match['account']}:role/{match['role']}"


@dataclass(frozen=True)
class IssuedCredentials:
    """What moto's AssumeRole* response carried."""

    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str = field(repr=False)
    expiration: datetime
    assumed_role_arn: str
