"""STS parameter checks made before anything else, as a table."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from broker.standin.errors import StsError
from broker.standin.query import (
    IncomingRequest,
    QueryRequest,
    check_assume_role_params,
    duration_seconds,
    external_id,
    role_arn,
    role_session_name,
)

RAISES = object()
FORM = (("content-type", "application/x-www-form-urlencoded; charset=utf-8"),)


def query(**params: str) -> QueryRequest:
    return QueryRequest(params.get("Action"), params)


def test_body_and_query_string_are_both_read() -> None:
    """Form body parameters win over the query string; both are read."""
    request = IncomingRequest("POST", "/", "Action=Ignored&Extra=1", FORM, b"Action=AssumeRole")
    parsed = QueryRequest.parse(request)
    assert parsed.action == "AssumeRole"
    assert parsed.get("Extra") == "1"


@pytest.mark.parametrize(
    ("check", "params", "expected"),
    [
        (role_session_name, {"RoleSessionName": "sbx-1"}, "sbx-1"),
        (role_session_name, {"RoleSessionName": "a+b=c,d.e@f_g"}, "a+b=c,d.e@f_g"),
        (role_session_name, {"RoleSessionName": "x"}, RAISES),
        (role_session_name, {"RoleSessionName": "é" * 3}, RAISES),
        (role_session_name, {}, RAISES),
        (duration_seconds, {}, 3600),
        (duration_seconds, {"DurationSeconds": "900"}, 900),
        (duration_seconds, {"DurationSeconds": "43201"}, RAISES),
        (duration_seconds, {"DurationSeconds": "soon"}, RAISES),
        (external_id, {}, None),
        (external_id, {"ExternalId": "a:b/c-d"}, "a:b/c-d"),
        (external_id, {"ExternalId": "x" * 1224}, "x" * 1224),
        (external_id, {"ExternalId": "x" * 1225}, RAISES),
        (external_id, {"ExternalId": "semi;colon"}, RAISES),
        (role_arn, {"RoleArn": "arn:aws:iam::123456789012:role/a/b/name"}, "name"),
        (role_arn, {"RoleArn": "arn:aws:iam::123456789012:user/name"}, RAISES),
        (role_arn, {"RoleArn": "short"}, RAISES),
        (role_arn, {}, RAISES),
    ],
)
def test_parameter_checks(
    check: Callable[[QueryRequest], object], params: dict[str, str], expected: object
) -> None:
    """Valid values come back parsed; invalid ones raise ValidationError."""
    if expected is RAISES:
        with pytest.raises(StsError) as caught:
            check(query(**params))
        assert caught.value.code == "ValidationError"
        return
    result = check(query(**params))
    assert getattr(result, "name", result) == expected


@pytest.mark.parametrize(
    ("extra", "ok"),
    [
        ({"Tags.member.1.Key": "k", "Tags.member.1.Value": "v"}, True),
        ({"TransitiveTagKeys.member.1": "k", "PolicyArns.member.1.arn": "arn"}, True),
        ({"SourceIdentity": "alice"}, True),
        ({"SourceIdentity": "aws:alice"}, False),
        ({"WebIdentityToken": "token"}, False),
        ({"Policy": "x" * 2049}, False),
        ({f"PolicyArns.member.{i}.arn": "arn" for i in range(1, 12)}, False),
    ],
)
def test_assume_role_parameter_set(extra: dict[str, str], ok: bool) -> None:
    """AssumeRole takes tags and a source identity but not a web identity token."""
    request = query(Action="AssumeRole", Version="2011-06-15", **extra)
    if ok:
        check_assume_role_params(request)
    else:
        with pytest.raises(StsError):
            check_assume_role_params(request)
