"""The rules for what operators and agents send the broker: AWS identifiers, durations, policies.

Pure functions. Each returns the value it accepts (or its default) and raises BadRequest with a
message that names the field and states the rule, so the caller can fix the input without reading
AWS documentation. The limits are AWS's (STS and IAM models; /work/shared/aws-facts.md section 2).
"""

from __future__ import annotations

import json
import re
import secrets
from typing import Any, NoReturn

from issuer.errors import BadRequest
from issuer.http import nesting

__all__ = [
    "DEFAULT_REGION",
    "DEFAULT_SESSION_DURATION",
    "EXTERNAL_ID",
    "PARTITIONS",
    "account_id",
    "default_region",
    "friendly_name",
    "generate_external_id",
    "partition_of",
    "region",
    "region_matches_partition",
    "role_arn",
    "session_duration",
    "session_policy",
    "shown",
    "ttl_seconds",
]

# Partitions Warrant can reach. The isolated (ISO) partitions are not among them: their STS
# endpoints are unreachable from outside, so an integration there could never work.
PARTITIONS = ("aws", "aws-cn", "aws-us-gov")
_DEFAULT_REGIONS = {"aws": "us-east-1", "aws-cn": "cn-north-1", "aws-us-gov": "us-gov-west-1"}
DEFAULT_REGION = _DEFAULT_REGIONS["aws"]

# STS DurationSeconds: 900 s to 12 h; AWS's own default is 1 h, and so is ours.
STS_MIN_DURATION = 900
STS_MAX_DURATION = 43_200
# Credentials from role chaining (role credentials -> AssumeRole) last at most 1 h, whatever the
# role's MaxSessionDuration; STS refuses longer with a ValidationError.
CHAINED_MAX_DURATION = 3_600
DEFAULT_SESSION_DURATION = 3_600
# A session must stay usable for at least 10 minutes after the vending floor: shorter and every
# vended credential would be refreshed again almost at once.
MIN_USABLE_SECONDS = 600

POLICY_MAX_CHARS = 2_048  # plaintext of the inline session policy, as STS counts it
# A policy document nests about 6 levels (Statement, Condition, operator, key, values); 2048
# characters could nest 1024, past Python's recursion limit wherever the policy is parsed again.
POLICY_MAX_DEPTH = 16
_POLICY_TOO_DEEP = (
    f"session_policy nests lists and objects more than {POLICY_MAX_DEPTH} levels deep; "
    "a policy document needs about 6"
)
_POLICY_FORBIDDEN_CHAR = re.compile(r"[^\t\n\r\u0020-\u00ff]")

NAME_MAX_CHARS = 100
NAME_RULE = (
    f"a name is 1 to {NAME_MAX_CHARS} printable characters, without leading or trailing spaces"
)

_ACCOUNT = re.compile(r"[0-9]{12}")
ACCOUNT_RULE = "an AWS account id is exactly 12 digits, e.g. 123456789012"

# IAM: role names 1-64 of [\w+=,.@-]; paths up to 512 characters; RoleArn at most 2048. ASCII only:
# IAM's \w is [A-Za-z0-9_], not Python's Unicode \w.
_ROLE_ARN = re.compile(
    r"arn:(?P<partition>aws|aws-cn|aws-us-gov):iam::(?P<account>[0-9]{12}):role"
    r"(?P<path>/(?:[\w+=,.@-]+/)*)(?P<name>[\w+=,.@-]{1,64})",
    re.ASCII,
)
ROLE_ARN_MAX_CHARS = 2_048
ROLE_PATH_MAX_CHARS = 512
ROLE_ARN_RULE = (
    "a role ARN is arn:<aws|aws-cn|aws-us-gov>:iam::<12-digit account>:role/[<path>/]<name>, "
    "the name 1 to 64 characters and each path segment of letters, digits and +=,.@_-, "
    f"at most {ROLE_ARN_MAX_CHARS} characters in all"
)

_REGION = re.compile(r"[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d{1,2}", re.ASCII)
REGION_RULE = "an AWS region looks like us-east-1, eu-west-2, cn-north-1 or us-gov-west-1"

# AWS ExternalId: 2-1224 characters of [\w+=,.@:/-].
EXTERNAL_ID = re.compile(r"[\w+=,.@:/-]{2,1224}", re.ASCII)
_EXTERNAL_ID_CHAR = re.compile(r"[\w+=,.@:/-]", re.ASCII)
EXTERNAL_ID_PREFIX = "warrant-"
_EXTERNAL_ID_RANDOM_CHARS = 32  # 192 bits of token_urlsafe: unique per integration, unguessable

_SHOWN_CHARS = 80


def account_id(value: object) -> str:
    """`value` if it is a 12-digit AWS account id."""
    if isinstance(value, str) and _ACCOUNT.fullmatch(value):
        return value
    _refuse("account_id", value, ACCOUNT_RULE)


def role_arn(value: object, *, account_id: str | None, field: str = "role_arn") -> str:
    """`value` if it is an IAM role ARN in `account_id`; any account when `account_id` is None
    (a cross-account target). A mismatch names both accounts."""
    if not isinstance(value, str) or len(value) > ROLE_ARN_MAX_CHARS:
        _refuse(field, value, ROLE_ARN_RULE)
    match = _ROLE_ARN.fullmatch(value)
    if match is None:
        _refuse(field, value, ROLE_ARN_RULE)
    if len(match["path"]) > ROLE_PATH_MAX_CHARS:
        _refuse(field, value, f"an IAM role path is at most {ROLE_PATH_MAX_CHARS} characters")
    if account_id is not None and match["account"] != account_id:
        raise BadRequest(
            f"{field} {shown(value)} is a role in account {match['account']}, but the "
            f"integration's account_id is {account_id}; use a role in account {account_id} "
            f"or correct account_id"
        )
    return value


def partition_of(arn: str) -> str:
    """The partition (aws, aws-cn, aws-us-gov) of a role ARN that `role_arn` accepts."""
    match = _ROLE_ARN.fullmatch(arn) if isinstance(arn, str) else None
    if match is None:
        _refuse("role_arn", arn, ROLE_ARN_RULE)
    return match["partition"]


def region(value: object) -> str:
    """`value` if it has the shape of an AWS region; DEFAULT_REGION (us-east-1) for None."""
    if value is None:
        return DEFAULT_REGION
    if isinstance(value, str) and _REGION.fullmatch(value):
        return value
    _refuse("region", value, REGION_RULE)


def default_region(partition: str) -> str:
    """The region an integration in `partition` uses when none is given."""
    return _DEFAULT_REGIONS.get(partition, DEFAULT_REGION)


def region_matches_partition(region: str, partition: str) -> None:
    """Raise BadRequest unless `region` lies in `partition`: STS in one partition never accepts
    a role of another (cn-* regions are aws-cn, us-gov-* are aws-us-gov, the rest aws)."""
    expected = _partition_of_region(region)
    if expected == partition:
        return
    if expected not in PARTITIONS:
        raise BadRequest(
            f"region {region!r} is in the isolated partition {expected}, which Warrant cannot "
            f"reach; use a region of partition {partition}, e.g. {default_region(partition)}"
        )
    raise BadRequest(
        f"region {region!r} is in partition {expected} but role_arn is in partition {partition}; "
        f"use a region of partition {partition}, e.g. {default_region(partition)}, "
        f"or a role in partition {expected}"
    )


def session_duration(value: object, *, chained: bool, floor_seconds: int) -> int:
    """`value` in seconds if STS accepts it and it outlasts the vending floor; the default
    (3600) for None."""
    if value is None:
        value = DEFAULT_SESSION_DURATION
    if not isinstance(value, int) or isinstance(value, bool):
        _refuse(
            "session_duration",
            value,
            f"a session duration is a whole number of seconds from {STS_MIN_DURATION} to "
            f"{STS_MAX_DURATION}",
        )
    if not STS_MIN_DURATION <= value <= STS_MAX_DURATION:
        raise BadRequest(
            f"session_duration {value} is outside the range STS accepts: {STS_MIN_DURATION} to "
            f"{STS_MAX_DURATION} seconds (15 minutes to 12 hours)"
        )
    if chained and value > CHAINED_MAX_DURATION:
        raise BadRequest(
            f"session_duration {value} is too long for a target_role_arn: assuming the target "
            f"role with role credentials is role chaining, which AWS caps at 1 hour; use at most "
            f"{CHAINED_MAX_DURATION} seconds"
        )
    minimum = floor_seconds + MIN_USABLE_SECONDS
    if value < minimum:
        raise BadRequest(
            f"session_duration {value} is too short: Warrant never vends credentials with less "
            f"than {floor_seconds} seconds left (boto3 starts refreshing 15 minutes before expiry "
            f"and blocks at 10), so a session must last at least {minimum} seconds to be usable "
            f"for {MIN_USABLE_SECONDS // 60} minutes; use {minimum} or more"
        )
    return value


def session_policy(value: object) -> str | None:
    """`value`, unchanged, if it is an inline session policy STS accepts; None for None or "".

    Returned as given, not re-serialised: STS counts the plaintext characters, so the caller's
    text is what must fit the 2048 limit.
    """
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise BadRequest(
            "session_policy must be a JSON policy document as a string, e.g. "
            '\'{"Version": "2012-10-17", "Statement": [...]}\''
        )
    if len(value) > POLICY_MAX_CHARS:
        raise BadRequest(
            f"session_policy is {len(value)} characters; STS allows at most {POLICY_MAX_CHARS} "
            f"(whitespace counts): remove whitespace or statements"
        )
    forbidden = _POLICY_FORBIDDEN_CHAR.search(value)
    if forbidden is not None:
        raise BadRequest(
            f"session_policy has the character U+{ord(forbidden[0]):04X} at position "
            f"{forbidden.start()}; STS allows only tab, line feed, carriage return and U+0020 to "
            f"U+00FF"
        )
    try:
        document: Any = json.loads(value, parse_constant=_no_constant)
    except ValueError as exc:
        raise BadRequest(f"session_policy is not valid JSON: {exc}") from exc
    except RecursionError:
        raise BadRequest(_POLICY_TOO_DEEP) from None
    if nesting(document) > POLICY_MAX_DEPTH:
        raise BadRequest(_POLICY_TOO_DEEP)
    if not isinstance(document, dict):
        raise BadRequest(
            f"session_policy must be a JSON object (a policy document), not a JSON "
            f"{type(document).__name__}"
        )
    if "Statement" not in document:
        raise BadRequest(
            'session_policy has no "Statement": a policy document needs '
            '{"Version": "2012-10-17", "Statement": [...]}'
        )
    statements = document["Statement"]
    if not isinstance(statements, list):
        statements = [statements]
    if not all(isinstance(statement, dict) for statement in statements):
        raise BadRequest(
            'session_policy "Statement" must be a statement object or a list of them, e.g. '
            '[{"Effect": "Allow", "Action": "s3:ListBucket", "Resource": "*"}]'
        )
    return value


def friendly_name(value: object, *, field: str = "name") -> str:
    """`value` if it is 1 to 100 printable characters with no surrounding spaces."""
    if (
        isinstance(value, str)
        and 1 <= len(value) <= NAME_MAX_CHARS
        and value.isprintable()
        and value == value.strip()
    ):
        return value
    _refuse(field, value, NAME_RULE)


def ttl_seconds(value: object, *, default: int, minimum: int, maximum: int) -> int:
    """`value` if it is a whole number of seconds in [minimum, maximum]; `default` for None."""
    if value is None:
        return default
    if isinstance(value, int) and not isinstance(value, bool) and minimum <= value <= maximum:
        return value
    _refuse("ttl_seconds", value, f"a TTL is a whole number of seconds from {minimum} to {maximum}")


PROFILES = ("incident", "analysis")


def profile(value: object) -> str:
    """A capability profile: `incident` (default: on-call agents) or `analysis`."""
    if value is None:
        return PROFILES[0]
    if not isinstance(value, str) or value not in PROFILES:
        raise BadRequest(f"profile must be one of {', '.join(PROFILES)}, not {shown(value)}")
    return value


def generate_external_id() -> str:
    """A fresh ExternalId: "warrant-" and 32 random characters, all within AWS's ExternalId
    charset. Warrant, the trusted party, generates it (as AWS requires) so that it is unique per
    integration; it is not a secret."""
    chars: list[str] = []
    while len(chars) < _EXTERNAL_ID_RANDOM_CHARS:
        # token_urlsafe's alphabet already lies within the ExternalId charset; the filter keeps
        # that true should either ever change.
        chars.extend(_EXTERNAL_ID_CHAR.findall(secrets.token_urlsafe(24)))
    return EXTERNAL_ID_PREFIX + "".join(chars[:_EXTERNAL_ID_RANDOM_CHARS])


def _partition_of_region(region: str) -> str:
    prefix, _, rest = region.partition("-")
    if prefix == "cn":
        return "aws-cn"
    if rest.startswith("gov-"):
        return "aws-us-gov"
    if rest.startswith("iso"):
        suffix = rest.split("-", 1)[0].removeprefix("iso")
        return f"aws-iso-{suffix}" if suffix else "aws-iso"
    return "aws"


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def _refuse(field: str, value: object, rule: str) -> NoReturn:
    raise BadRequest(f"invalid {field} {shown(value)}: {rule}")


def shown(value: object) -> str:
    """`repr(value)` cut to 80 characters, for quoting input in an error message."""
    text = repr(value)
    if len(text) > _SHOWN_CHARS:
        return text[: _SHOWN_CHARS - 3] + "..."
    return text
