"""The input rules for integrations and sandboxes: AWS identifiers, durations, session policies,
names, TTLs and generated external ids."""

from __future__ import annotations

import json

import pytest

from broker import validation
from issuer.errors import BadRequest

ACCOUNT = "123456789012"
OTHER = "210987654321"
POLICY = '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*"}]}'


@pytest.mark.parametrize("value", ["123456789012", "000000000000"])
def test_account_ids_accepted(value: str) -> None:
    """Twelve ASCII digits are an account id."""
    assert validation.account_id(value) == value


@pytest.mark.parametrize(
    "value",
    [
        "",
        "12345678901",
        "1234567890123",
        "12345678901a",
        " 123456789012",
        "\uff11\uff12\uff13\uff14\uff15\uff16\uff17\uff18\uff19\uff10\uff11\uff12",  # fullwidth
        123456789012,
        None,
    ],
)
def test_account_ids_refused(value: object) -> None:
    """Anything but exactly twelve ASCII digits is refused, naming the field and the rule."""
    with pytest.raises(BadRequest) as caught:
        validation.account_id(value)
    assert "account_id" in caught.value.message
    assert "exactly 12 digits" in caught.value.message


@pytest.mark.parametrize(
    ("arn", "partition"),
    [
        (f"arn:aws:iam::{ACCOUNT}:role/warrant", "aws"),
        (f"arn:aws-cn:iam::{ACCOUNT}:role/warrant", "aws-cn"),
        (f"arn:aws-us-gov:iam::{ACCOUNT}:role/warrant", "aws-us-gov"),
        (f"arn:aws:iam::{ACCOUNT}:role/service-role/team/Agent+=,.@_-1", "aws"),
        (f"arn:aws:iam::{ACCOUNT}:role/" + "r" * 64, "aws"),
        (f"arn:aws:iam::{ACCOUNT}:role/" + "p/" * 255 + "r", "aws"),
    ],
)
def test_role_arns_accepted(arn: str, partition: str) -> None:
    """Role ARNs in the three reachable partitions, with paths and the full name charset, pass and
    report their partition."""
    assert validation.role_arn(arn, account_id=ACCOUNT) == arn
    assert validation.partition_of(arn) == partition


@pytest.mark.parametrize(
    "arn",
    [
        "",
        "warrant",
        f"arn:aws:iam::{ACCOUNT}:role/",
        f"arn:aws:iam::{ACCOUNT}:role/" + "r" * 65,
        f"arn:aws:iam::{ACCOUNT}:role/bad name",
        f"arn:aws:iam::{ACCOUNT}:role/bad*name",
        f"arn:aws:iam::{ACCOUNT}:role/rôle",
        f"arn:aws:iam::{ACCOUNT}:role//double-slash",
        f"arn:aws:iam::{ACCOUNT}:role/path with space/name",
        f"arn:aws:iam::{ACCOUNT}:user/warrant",
        f"arn:aws:sts::{ACCOUNT}:role/warrant",
        f"arn:aws-iso:iam::{ACCOUNT}:role/warrant",
        f"arn:aws:iam::{ACCOUNT[:-1]}:role/warrant",
        f"arn:aws:iam:us-east-1:{ACCOUNT}:role/warrant",
        f"arn:aws:iam::{ACCOUNT}:role/warrant\n",
        f"arn:aws:iam::{ACCOUNT}:role/" + "p/" * 257 + "r",  # path over 512 characters
        f"arn:aws:iam::{ACCOUNT}:role/" + "p/" * 1100 + "r",  # over 2048 characters
        None,
    ],
)
def test_role_arns_refused(arn: object) -> None:
    """Malformed role ARNs, wrong services or resource types, bad names and paths are refused,
    naming the field."""
    with pytest.raises(BadRequest) as caught:
        validation.role_arn(arn, account_id=ACCOUNT, field="target_role_arn")
    assert "target_role_arn" in caught.value.message


def test_role_arn_in_another_account_names_both_accounts() -> None:
    """A role in another account than the integration's is refused with both account ids."""
    with pytest.raises(BadRequest) as caught:
        validation.role_arn(f"arn:aws:iam::{OTHER}:role/warrant", account_id=ACCOUNT)
    assert OTHER in caught.value.message
    assert ACCOUNT in caught.value.message


def test_role_arn_without_account_accepts_any_account() -> None:
    """With account_id None (a cross-account target) any account's role passes."""
    arn = f"arn:aws:iam::{OTHER}:role/target"
    assert validation.role_arn(arn, account_id=None) == arn


def test_partition_of_refuses_what_is_not_a_role_arn() -> None:
    """partition_of raises BadRequest for a string that is not a role ARN."""
    with pytest.raises(BadRequest):
        validation.partition_of("arn:aws:s3:::bucket")


@pytest.mark.parametrize(
    "value",
    ["us-east-1", "eu-west-2", "cn-north-1", "us-gov-west-1", "ap-southeast-3", "us-isob-east-1"],
)
def test_regions_accepted(value: str) -> None:
    """Region-shaped names pass unchanged."""
    assert validation.region(value) == value


@pytest.mark.parametrize(
    "value", ["", "us-east", "US-EAST-1", "useast1", "us-east-123", "u-east-1", " us-east-1", 1]
)
def test_regions_refused(value: object) -> None:
    """Names without a region's shape are refused, naming the field and an example."""
    with pytest.raises(BadRequest) as caught:
        validation.region(value)
    assert "region" in caught.value.message
    assert "us-east-1" in caught.value.message


def test_region_defaults_to_us_east_1() -> None:
    """No region means us-east-1."""
    assert validation.region(None) == "us-east-1"


@pytest.mark.parametrize(
    ("region", "partition"),
    [
        ("us-east-1", "aws"),
        ("eu-central-2", "aws"),
        ("cn-north-1", "aws-cn"),
        ("cn-northwest-1", "aws-cn"),
        ("us-gov-west-1", "aws-us-gov"),
        ("us-gov-east-1", "aws-us-gov"),
    ],
)
def test_regions_matching_their_partition(region: str, partition: str) -> None:
    """A region in the role's partition is accepted."""
    validation.region_matches_partition(region, partition)


@pytest.mark.parametrize(
    ("region", "partition", "expected"),
    [
        ("cn-north-1", "aws", "aws-cn"),
        ("us-east-1", "aws-cn", "aws"),
        ("us-gov-west-1", "aws", "aws-us-gov"),
        ("eu-west-1", "aws-us-gov", "aws"),
        ("us-iso-east-1", "aws", "aws-iso"),
        ("us-isob-east-1", "aws", "aws-iso-b"),
    ],
)
def test_regions_outside_the_partition_refused(region: str, partition: str, expected: str) -> None:
    """A region of another partition is refused, naming the region's partition and the ARN's."""
    with pytest.raises(BadRequest) as caught:
        validation.region_matches_partition(region, partition)
    assert region in caught.value.message
    assert expected in caught.value.message
    assert partition in caught.value.message


@pytest.mark.parametrize(
    ("partition", "region"),
    [("aws", "us-east-1"), ("aws-cn", "cn-north-1"), ("aws-us-gov", "us-gov-west-1")],
)
def test_default_region_per_partition(partition: str, region: str) -> None:
    """Each partition has a default region inside it."""
    assert validation.default_region(partition) == region
    validation.region_matches_partition(region, partition)


@pytest.mark.parametrize(
    ("value", "chained", "floor", "expected"),
    [
        (None, False, 900, 3600),
        (None, True, 900, 3600),
        (1500, False, 900, 1500),
        (43200, False, 900, 43200),
        (3600, True, 900, 3600),
        (900, False, 300, 900),
    ],
)
def test_durations_accepted(value: int | None, chained: bool, floor: int, expected: int) -> None:
    """Durations within STS's range, the chaining cap and above the floor pass; None is 3600."""
    assert validation.session_duration(value, chained=chained, floor_seconds=floor) == expected


@pytest.mark.parametrize(
    ("value", "chained", "floor", "words"),
    [
        (899, False, 0, "900 to 43200"),
        (43201, False, 900, "900 to 43200"),
        (0, False, 0, "900 to 43200"),
        (-3600, False, 0, "900 to 43200"),
        (3601, True, 900, "1 hour"),
        (43200, True, 900, "role chaining"),
        (1499, False, 900, "at least 1500"),
        (900, False, 900, "boto3"),
        (3600, False, 3001, "at least 3601"),
        (True, False, 0, "whole number"),
        (3600.0, False, 0, "whole number"),
        ("3600", False, 0, "whole number"),
    ],
)
def test_durations_refused(value: object, chained: bool, floor: int, words: str) -> None:
    """Durations outside STS's range, past the 1-hour chaining cap, too close to the vending
    floor, or not integers are refused with the rule that broke."""
    with pytest.raises(BadRequest) as caught:
        validation.session_duration(value, chained=chained, floor_seconds=floor)
    assert "session_duration" in caught.value.message
    assert words in caught.value.message


@pytest.mark.parametrize(
    "value",
    [
        POLICY,
        '{"Statement": []}',
        '{\n\t"Statement": [],\r\n "Sid": "\u00ff caf\u00e9"\n}',
        '{"Statement": [], "pad": "' + "x" * (2048 - len('{"Statement": [], "pad": ""}')) + '"}',
    ],
)
def test_session_policies_accepted_unchanged(value: str) -> None:
    """JSON objects with a Statement, within 2048 allowed characters, come back byte for byte."""
    assert validation.session_policy(value) == value


@pytest.mark.parametrize("value", [None, ""])
def test_no_session_policy_is_none(value: str | None) -> None:
    """No policy (None or empty) is None."""
    assert validation.session_policy(value) is None


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("not json", "not valid JSON"),
        ('{"Statement": [}', "not valid JSON"),
        ('{"Statement": NaN}', "not valid JSON"),
        ("[]", "JSON object"),
        ('"Statement"', "JSON object"),
        ("42", "JSON object"),
        ('{"Version": "2012-10-17"}', "Statement"),
        ('{"Statement": [], "pad": "' + "x" * 2049 + '"}', "at most 2048"),
        ('{"Statement": [], "Sid": "\u0100"}', "U+0100"),
        ('{"Statement": [], "Sid": "\u2028"}', "U+2028"),
        ('{"Statement": [], "Sid": "\x00"}', "U+0000"),
        ({"Statement": []}, "as a string"),
    ],
)
def test_session_policies_refused(value: object, words: str) -> None:
    """Non-JSON, non-object, Statement-less, over-2048-character policies and characters outside
    AWS's allowed set are refused, saying which rule."""
    with pytest.raises(BadRequest) as caught:
        validation.session_policy(value)
    assert "session_policy" in caught.value.message
    assert words in caught.value.message


def test_policy_of_exactly_2049_characters_refused() -> None:
    """2049 characters is one too many, even for an otherwise valid policy."""
    value = '{"Statement": [], "pad": "' + "x" * (2049 - len('{"Statement": [], "pad": ""}'))
    value += '"}'
    assert len(value) == 2049
    json.loads(value)
    with pytest.raises(BadRequest, match="2049 characters"):
        validation.session_policy(value)


@pytest.mark.parametrize("value", ["p", "Production (eu)", "n" * 100, "東京 Ünïcode"])
def test_friendly_names_accepted(value: str) -> None:
    """1 to 100 printable characters pass."""
    assert validation.friendly_name(value) == value


@pytest.mark.parametrize(
    "value", ["", " ", "n" * 101, "tab\there", "line\nbreak", "nul\x00", " lead", "trail ", None]
)
def test_friendly_names_refused(value: object) -> None:
    """Empty, blank, over-100-character, unprintable or space-padded names are refused."""
    with pytest.raises(BadRequest) as caught:
        validation.friendly_name(value)
    assert "1 to 100 printable characters" in caught.value.message


@pytest.mark.parametrize(("value", "expected"), [(None, 3600), (60, 60), (86400, 86400)])
def test_ttls_accepted(value: int | None, expected: int) -> None:
    """TTLs within range pass; None is the default."""
    assert validation.ttl_seconds(value, default=3600, minimum=60, maximum=86400) == expected


@pytest.mark.parametrize("value", [59, 86401, 0, -1, True, False, 60.0, "60"])
def test_ttls_refused(value: object) -> None:
    """TTLs out of range, booleans, floats and strings are refused with the range."""
    with pytest.raises(BadRequest) as caught:
        validation.ttl_seconds(value, default=3600, minimum=60, maximum=86400)
    assert "ttl_seconds" in caught.value.message
    assert "60 to 86400" in caught.value.message


def test_external_ids_fit_aws_and_are_unique() -> None:
    """Generated external ids are warrant- plus 32 characters of AWS's ExternalId charset, within
    2-1224 characters, and never repeat."""
    generated = {validation.generate_external_id() for _ in range(1000)}
    assert len(generated) == 1000
    for value in generated:
        assert value.startswith("warrant-")
        assert len(value) == len("warrant-") + 32
        assert validation.EXTERNAL_ID.fullmatch(value)
        assert 2 <= len(value) <= 1224


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("ab", True),
        ("a", False),
        ("a" * 1224, True),
        ("a" * 1225, False),
        ("a b", False),
        ("a:/=,.@+-_", True),
        ("é", False),
    ],
)
def test_external_id_charset_and_length(value: str, ok: bool) -> None:
    """The ExternalId pattern is AWS's: 2 to 1224 of [\\w+=,.@:/-], ASCII only."""
    assert (validation.EXTERNAL_ID.fullmatch(value) is not None) is ok
