"""Reading and amending moto's AssumeRole* responses.

moto writes `Expiration` with microseconds (`2026-01-01T12:00:00.123456Z`); AWS writes whole
seconds (`2026-01-01T12:00:00Z`), the only form botocore's IMDS stale-credential logic parses, so
the gate rewrites it. moto's AssumeRoleWithWebIdentity result also lacks the fields AWS returns
from the token (SubjectFromWebIdentityToken, Provider, Audience, SourceIdentity); the gate adds
them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from xml.etree import ElementTree as ET
from xml.sax.saxutils import escape

from broker.standin.errors import STS_NAMESPACE
from broker.standin.model import IssuedCredentials

__all__ = ["AWS_TIME_FORMAT", "add_result_fields", "read_credentials", "set_expiration"]

AWS_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_NS = {"sts": STS_NAMESPACE}
_EXPIRATION = re.compile(rb"<Expiration>[^<]*</Expiration>")


def _text(root: ET.Element, path: str) -> str:
    found = root.find(path, _NS)
    if found is None or found.text is None:
        raise ValueError(f"moto's response has no {path}")
    return found.text


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def read_credentials(body: bytes, action: str) -> IssuedCredentials:
    root = ET.fromstring(body)  # noqa: S314 - moto is ours, on loopback
    result = f"sts:{action}Result"
    return IssuedCredentials(
        access_key_id=_text(root, f"{result}/sts:Credentials/sts:AccessKeyId"),
        secret_access_key=_text(root, f"{result}/sts:Credentials/sts:SecretAccessKey"),
        session_token=_text(root, f"{result}/sts:Credentials/sts:SessionToken"),
        expiration=_parse_time(_text(root, f"{result}/sts:Credentials/sts:Expiration")),
        assumed_role_arn=_text(root, f"{result}/sts:AssumedRoleUser/sts:Arn"),
    )


def set_expiration(body: bytes, expiration: datetime) -> bytes:
    stamp = expiration.astimezone(UTC).strftime(AWS_TIME_FORMAT).encode()
    return _EXPIRATION.sub(b"<Expiration>" + stamp + b"</Expiration>", body, count=1)


def add_result_fields(body: bytes, action: str, fields: Mapping[str, str]) -> bytes:
    closing = f"</{action}Result>".encode()
    extra = "".join(f"<{name}>{escape(value)}</{name}>" for name, value in fields.items())
    return body.replace(closing, extra.encode() + closing, 1)
