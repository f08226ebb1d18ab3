"""Properties of the input rules, checked by hypothesis against independent oracles: role ARNs,
tenant slugs, token subjects, STS session names, session policies, request bodies, regions and
issuer URLs.

Each rule either accepts its input unchanged or raises BadRequest (InvalidSlug for slugs) with a
message; no input may raise anything else. The oracles restate each rule without the regular
expression the code uses, and AWS's limits are written out here rather than imported, so a wrong
pattern or constant shows up as a disagreement. Explicit examples pin the boundaries every run.
"""

from __future__ import annotations

import json
import operator
import re
import string
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from broker import validation
from broker.session_name import MAX_LENGTH, session_name
from broker.setup.policies import guarded_session_policy, read_only_session_policy
from broker.setup.trust import issuer_host_path
from issuer.app import MINT_FIELDS
from issuer.errors import BadRequest, InvalidSlug
from issuer.http import MAX_JSON_DEPTH, nesting, parse_json_object
from issuer.minting import TokenMinter
from issuer.tenants import AUDIENCE_SUFFIX, SLUG_RULE, audience_for, validate_slug

P = ParamSpec("P")
T = TypeVar("T")
PROPERTY = settings(max_examples=150, deadline=None, database=None)

IAM_CHARS = string.ascii_letters + string.digits + "_+=,.@-"
ASCII_LOWER = string.ascii_lowercase
# Near misses are where rules break: every character class the rules mention, and some they
# do not (Unicode letters and digits, which Python's \w and \d accept unless told otherwise).
UNICODE = "éß٣Ⅻ𝟙ı"
NEAR = IAM_CHARS + ":/ \t\n*?" + UNICODE

# AWS's limits, written out here rather than taken from the code under test: what STS accepts
# for RoleSessionName (Java's ASCII \w), its inline-policy size, IAM's role path and ARN sizes.
STS_SESSION_NAME = re.compile(r"[A-Za-z0-9_+=,.@-]{2,64}")
STS_POLICY_MAX_CHARS = 2048
IAM_ROLE_PATH_MAX_CHARS = 512
IAM_ROLE_ARN_MAX_CHARS = 2048


def mutated(valid: st.SearchStrategy[str], alphabet: str = NEAR) -> st.SearchStrategy[str]:
    """`valid` strings with a few characters inserted, deleted or replaced from `alphabet`."""

    @st.composite
    def mutate(draw: st.DrawFn) -> str:
        text = list(draw(valid))
        for _ in range(draw(st.integers(1, 3))):
            at = draw(st.integers(0, len(text)))
            kind = draw(st.sampled_from(["insert", "delete", "replace"]))
            char = draw(st.sampled_from(alphabet))
            if kind == "insert":
                text.insert(at, char)
            elif at < len(text):
                if kind == "delete":
                    del text[at]
                else:
                    text[at] = char
        return "".join(text)

    return mutate()


def attempt(call: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T | BadRequest:
    """What `call` returns, or the BadRequest it raises; any other exception propagates."""
    try:
        return call(*args, **kwargs)
    except BadRequest as exc:
        return exc


def any_object() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.none(), st.booleans(), st.integers(), st.floats(), st.binary(), st.lists(st.text())
    )


# -- role ARNs ---------------------------------------------------------------------------------

accounts = st.text("0123456789", min_size=12, max_size=12)
segments = st.text(IAM_CHARS, min_size=1, max_size=20)


@st.composite
def role_arns(draw: st.DrawFn, *, valid: bool = True) -> tuple[str, str, str]:
    """(arn, partition, account) for a role ARN IAM accepts; with `valid=False` the name and the
    path may also be just too long (65 characters, over 512)."""
    partition = draw(st.sampled_from(validation.PARTITIONS))
    account = draw(accounts)
    long_segments = st.lists(st.text(IAM_CHARS, min_size=90, max_size=130), min_size=3, max_size=5)
    path = "/" + "".join(s + "/" for s in draw(st.lists(segments, max_size=4) | long_segments))
    name = draw(
        st.text(IAM_CHARS, min_size=1, max_size=8) | st.text(IAM_CHARS, min_size=60, max_size=65)
    )
    if valid:
        assume(len(path) <= IAM_ROLE_PATH_MAX_CHARS and len(name) <= 64)
    return f"arn:{partition}:iam::{account}:role{path}{name}", partition, account


def arn_with_path(length: int) -> str:
    """A role ARN whose path (from the slash after `role` to the one before the name) is
    `length` characters."""
    return f"arn:aws:iam::123456789012:role/{'p' * (length - 2)}/reader"


def arn_oracle(value: str) -> bool:
    """The role-ARN rule, restated by splitting rather than by one regular expression."""
    parts = value.split(":", 5)
    if len(parts) != 6 or len(value) > IAM_ROLE_ARN_MAX_CHARS:
        return False
    arn, partition, service, region, account, resource = parts
    kind, _, path_and_name = resource.partition("/")
    *path, name = path_and_name.split("/")
    return (
        (arn, service, region, kind) == ("arn", "iam", "", "role")
        and partition in validation.PARTITIONS
        and len(account) == 12
        and set(account) <= set(string.digits)
        and 1 <= len(name) <= 64
        and set(name) <= set(IAM_CHARS)
        and all(segment and set(segment) <= set(IAM_CHARS) for segment in path)
        and len(path_and_name) + 1 - len(name) <= IAM_ROLE_PATH_MAX_CHARS
    )


@given(role_arns())
@PROPERTY
def test_valid_role_arns_round_trip(case: tuple[str, str, str]) -> None:
    """A role ARN in any partition, with or without a path, is accepted unchanged, in its own
    account and cross-account, and its partition is read back."""
    arn, partition, account = case
    assert validation.role_arn(arn, account_id=account) == arn
    assert validation.role_arn(arn, account_id=None) == arn
    assert validation.partition_of(arn) == partition


@given(role_arns(), accounts)
@PROPERTY
def test_role_arn_in_another_account_names_both(case: tuple[str, str, str], other: str) -> None:
    """A role in another account than the integration's is refused, naming both accounts."""
    arn, _, account = case
    assume(other != account)
    with pytest.raises(BadRequest) as refused:
        validation.role_arn(arn, account_id=other)
    assert account in refused.value.message
    assert other in refused.value.message


@given(
    st.one_of(
        mutated(role_arns(valid=False).map(lambda case: case[0])),
        st.builds(operator.add, role_arns().map(lambda case: case[0]), st.sampled_from(NEAR)),
        st.builds(operator.add, role_arns().map(lambda case: case[0]), st.sampled_from(UNICODE)),
        st.text(NEAR, max_size=80).map(lambda tail: f"arn:aws:iam::123456789012:role{tail}"),
        st.text(),
    )
)
@example(arn_with_path(IAM_ROLE_PATH_MAX_CHARS))  # the boundaries, every run
@example(arn_with_path(IAM_ROLE_PATH_MAX_CHARS + 1))
@example("arn:aws:iam::123456789012:role/" + "r" * 64)
@example("arn:aws:iam::123456789012:role/" + "r" * 65)
@example("arn:aws:iam::123456789012:role/é")
@example("arn:aws:iam::123456789012:role/r\n")
@PROPERTY
def test_role_arn_accepts_exactly_what_iam_does(value: str) -> None:
    """Any text is either accepted unchanged, exactly when it is a role ARN, or refused with
    BadRequest stating the rule; nothing else is raised."""
    if arn_oracle(value):
        assert validation.role_arn(value, account_id=None) == value
    else:
        with pytest.raises(BadRequest, match=r"^invalid role_arn|path"):
            validation.role_arn(value, account_id=None)


@given(any_object())
@PROPERTY
def test_role_arn_refuses_non_strings(value: object) -> None:
    """Whatever JSON or Python hands in, a non-string is BadRequest, never a TypeError."""
    with pytest.raises(BadRequest):
        validation.role_arn(value, account_id=None)
    with pytest.raises(BadRequest):
        validation.partition_of(value)  # type: ignore[arg-type]


# -- tenant slugs ------------------------------------------------------------------------------

slugs = st.from_regex(r"\A[a-z0-9][a-z0-9-]{0,61}[a-z0-9]\Z")


def slug_oracle(value: str) -> bool:
    allowed = ASCII_LOWER + string.digits + "-"
    return (
        2 <= len(value) <= 63
        and all(c in allowed for c in value)
        and value[0] != "-"
        and value[-1] != "-"
    )


@given(slugs)
@PROPERTY
def test_valid_slugs_give_a_valid_iam_client_id(slug: str) -> None:
    """A valid slug is accepted unchanged; its audience `<slug>-oidc-service` fits IAM's client ID
    limit (255 characters) and charset."""
    assert validate_slug(slug) == slug
    audience = audience_for(slug)
    assert audience == slug + AUDIENCE_SUFFIX
    assert 1 <= len(audience) <= 255
    assert set(audience) <= set(ASCII_LOWER + string.digits + "-")


@given(
    st.one_of(
        mutated(slugs),
        st.text(),
        st.text(ASCII_LOWER + "-", max_size=70),
        st.text(ASCII_LOWER + string.digits, min_size=61, max_size=65),
    )
)
@example("a" * 63)
@example("a" * 64)
@example("acme\n")
@PROPERTY
def test_slug_accepts_exactly_the_rule(value: str) -> None:
    """Any text is accepted unchanged exactly when the slug rule allows it; otherwise it is
    InvalidSlug quoting the rule."""
    if slug_oracle(value):
        assert validate_slug(value) == value
    else:
        with pytest.raises(InvalidSlug, match=re.escape(SLUG_RULE)):
            validate_slug(value)


@given(any_object())
@PROPERTY
def test_slug_refuses_non_strings(value: object) -> None:
    """A non-string slug is InvalidSlug, never a TypeError."""
    with pytest.raises(InvalidSlug):
        validate_slug(value)


# -- token subjects ----------------------------------------------------------------------------

SUBJECT_CHARS = string.ascii_letters + string.digits + "._@:+=-"
subjects = st.text(SUBJECT_CHARS, min_size=1, max_size=200)


@given(
    slugs,
    st.one_of(
        subjects,
        mutated(subjects),
        subjects.map(lambda subject: subject + "\n"),
        st.text(SUBJECT_CHARS, min_size=190, max_size=210),
        st.text(),
    ),
)
@example("acme", "sbx-1\n")
@example("a" * 63, "s" * 184)  # `sub` of exactly 255 characters
@example("a" * 63, "s" * 185)
@PROPERTY
def test_token_subject_is_id_like_or_refused(slug: str, subject: str) -> None:
    """A token's `sub` is `tenant:<slug>:<subject>` for 1-200 id-like characters (at most 255 in
    all, IAM's limit for the condition key); anything else is BadRequest, a trailing newline
    included. No subject means `tenant:<slug>`."""
    sub = f"tenant:{slug}:{subject}"
    if subject == "":
        assert TokenMinter._subject(slug, subject) == f"tenant:{slug}"
    elif len(subject) <= 200 and set(subject) <= set(SUBJECT_CHARS) and len(sub) <= 255:
        assert TokenMinter._subject(slug, subject) == sub
    else:
        with pytest.raises(BadRequest, match="subject"):
            TokenMinter._subject(slug, subject)


# -- session names -----------------------------------------------------------------------------


@given(st.text(), st.text())
@PROPERTY
def test_session_name_is_always_one_sts_accepts(tenant: str, label: str) -> None:
    """Whatever the tenant and label (an integration name or sandbox id), the session name
    matches STS's [\\w+=,.@-]{2,64}, is deterministic, and a short name made only of allowed
    characters is kept as it is."""
    name = session_name(tenant, label)
    assert STS_SESSION_NAME.fullmatch(name), name
    assert session_name(tenant, label) == name
    full = f"warrant-{tenant}-{label}"
    if STS_SESSION_NAME.fullmatch(full):
        assert name == full


@given(st.text(min_size=1), st.text(min_size=1), st.text(min_size=1))
@PROPERTY
def test_long_session_names_that_differ_stay_distinct(tenant: str, one: str, two: str) -> None:
    """Two labels that make names over 64 characters stay distinct, even when they differ only
    past the truncation point (the name ends in a hash of the whole)."""
    assume(one != two)
    prefix = "x" * MAX_LENGTH
    assert session_name(tenant, prefix + one) != session_name(tenant, prefix + two)


# -- session policies --------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=30,
)
statements = st.lists(
    st.fixed_dictionaries(
        {
            "Effect": st.sampled_from(["Allow", "Deny"]),
            "Action": st.lists(st.sampled_from(["s3:ListBucket", "ec2:Describe*", "logs:*"])),
            "Resource": st.just("*"),
        },
        optional={"Condition": st.dictionaries(st.text(max_size=12), json_values, max_size=2)},
    ),
    max_size=12,
)
policies = st.one_of(
    statements.map(lambda s: {"Version": "2012-10-17", "Statement": s}),
    json_values,
    st.dictionaries(st.sampled_from(["Statement", "Version", "Id"]), json_values),
)


def padded_policy(length: int) -> str:
    """A valid policy document padded with spaces (which count) to `length` characters."""
    text = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Deny", "Action": "*"}]})
    return text + " " * (length - len(text))


@st.composite
def policy_texts(draw: st.DrawFn) -> str:
    """A JSON value as some client might write it, or text that is nearly JSON."""
    document = draw(policies)
    text = json.dumps(
        document,
        ensure_ascii=draw(st.booleans()),
        indent=draw(st.sampled_from([None, 0, 2])),
        separators=draw(st.sampled_from([None, (",", ":")])),
    )
    if draw(st.booleans()):
        return text
    return draw(
        st.one_of(
            st.integers(0, 2100).map(lambda pad: text + " " * pad),  # across STS's limit
            st.just(text[: len(text) // 2]),
            st.just("[" * draw(st.integers(0, 1100)) + text),
            st.just("NaN" if "null" not in text else text.replace("null", "NaN", 1)),
            st.text(),
        )
    )


@given(policy_texts())
@example(padded_policy(STS_POLICY_MAX_CHARS))
@example(padded_policy(STS_POLICY_MAX_CHARS + 1))
@example("[" * 1020 + "]" * 1020)  # 1020 levels deep, within 2048 characters
@example('{"Statement": null}')
@example('{"Statement": [1]}')
@PROPERTY
def test_session_policy_is_accepted_as_given_or_refused(text: str) -> None:
    """Any text is either accepted unchanged (then it is a JSON object with a Statement, at most
    2048 characters STS allows) or refused with BadRequest; nothing else is raised. An accepted
    policy merged with the read-only guard fits 2048 characters, or is refused saying how long
    it may be."""
    accepted = attempt(validation.session_policy, text)
    if isinstance(accepted, BadRequest):
        assert accepted.message.startswith("session_policy")
        return
    if text == "":
        assert accepted is None
        return
    assert accepted == text
    assert len(text) <= STS_POLICY_MAX_CHARS
    assert all(c in "\t\n\r" or 0x20 <= ord(c) <= 0xFF for c in text)
    document = json.loads(text)
    assert isinstance(document, dict)
    assert "Statement" in document
    merged = attempt(guarded_session_policy, text)
    if isinstance(merged, BadRequest):
        assert "keep its statements under about" in merged.message
        return
    assert len(merged) <= STS_POLICY_MAX_CHARS
    guard = json.loads(read_only_session_policy())["Statement"]
    denies = [s for s in guard if s["Effect"] == "Deny"]
    merged_statements = json.loads(merged)["Statement"]
    assert merged_statements[: len(denies)] == denies  # the guard always comes first, intact
    assert not any(s.get("Sid") == "WithinTheRole" for s in merged_statements[len(denies) :])


def test_deep_session_policy_is_refused() -> None:
    """A policy nested past Python's recursion limit (2048 characters allow 1024 levels) is
    BadRequest, not a RecursionError. Not a hypothesis property: hypothesis raises the recursion
    limit while it runs, which would hide the failure."""
    for text in ("[" * 1020 + "]" * 1020, '{"Statement": ' + "[" * 1000 + "]" * 1000 + "}"):
        with pytest.raises(BadRequest, match="nests lists and objects more than"):
            validation.session_policy(text)


@given(st.one_of(st.booleans(), st.integers(), st.floats(), st.lists(st.text()), st.binary()))
@PROPERTY
def test_session_policy_refuses_non_strings(value: object) -> None:
    """A non-string session policy is BadRequest, never a TypeError."""
    with pytest.raises(BadRequest):
        validation.session_policy(value)


# -- request bodies ----------------------------------------------------------------------------


@given(
    st.one_of(
        st.binary(max_size=200),
        json_values.map(lambda value: json.dumps(value).encode()),
        st.dictionaries(st.sampled_from([*sorted(MINT_FIELDS), "x"]), json_values).map(
            lambda body: json.dumps(body).encode()
        ),
    )
)
@example(b"[" * 100_000 + b"]" * 100_000)  # deeper than any recursion limit
@example(b'{"ttl_seconds": ' + b"9" * 5000 + b"}")  # past Python's int/str digit limit
@example(b'{"tenant": ' + b"[" * 40 + b"]" * 40 + b"}")
@example(b'{"tenant": NaN}')
@PROPERTY
def test_request_body_is_an_object_or_refused(raw: bytes) -> None:
    """Any request body is a JSON object of allowed members, nested at most 32 levels, or
    BadRequest saying what is wrong with it; nothing else is raised (a 500)."""
    body = attempt(parse_json_object, raw, MINT_FIELDS)
    if isinstance(body, BadRequest):
        assert body.message.startswith(("request body", "unknown field"))
        return
    assert isinstance(body, dict)
    assert set(body) <= MINT_FIELDS
    assert nesting(body) <= MAX_JSON_DEPTH


# -- regions -----------------------------------------------------------------------------------

directions = st.sampled_from(
    ["east", "west", "north", "south", "central", "northeast", "southeast"]
)
region_numbers = st.integers(1, 99).map(str)
regions_by_partition = {
    "aws": st.builds(
        "{}-{}-{}".format,
        st.sampled_from(["us", "eu", "ap", "sa", "ca", "me", "af", "il", "mx"]),
        directions,
        region_numbers,
    ),
    "aws-cn": st.builds("cn-{}-{}".format, directions, region_numbers),
    "aws-us-gov": st.builds("us-gov-{}-{}".format, directions, region_numbers),
}


@st.composite
def regions(draw: st.DrawFn) -> tuple[str, str]:
    partition = draw(st.sampled_from(validation.PARTITIONS))
    return draw(regions_by_partition[partition]), partition


def region_oracle(value: str) -> bool:
    """The region shape, restated without a regular expression."""
    parts = value.split("-")
    if len(parts) == 4:
        country, middle, word, number = parts
        if middle != "gov" and not (
            middle.startswith("iso") and len(middle) <= 4 and set(middle[3:]) <= set(ASCII_LOWER)
        ):
            return False
    elif len(parts) == 3:
        country, word, number = parts
    else:
        return False
    return (
        len(country) == 2
        and set(country) <= set(ASCII_LOWER)
        and bool(word)
        and set(word) <= set(ASCII_LOWER)
        and 1 <= len(number) <= 2
        and set(number) <= set(string.digits)
    )


@given(regions())
@PROPERTY
def test_regions_are_accepted_in_their_own_partition_only(case: tuple[str, str]) -> None:
    """A region of any partition is accepted unchanged, matches its own partition, and is refused
    for the others with a message naming both partitions; each partition's default region is
    one of its own."""
    region, partition = case
    assert validation.region(region) == region
    validation.region_matches_partition(region, partition)
    for other in validation.PARTITIONS:
        if other != partition:
            with pytest.raises(BadRequest) as refused:
                validation.region_matches_partition(region, other)
            assert partition in refused.value.message
            assert other in refused.value.message
        validation.region_matches_partition(validation.default_region(other), other)


@given(
    st.one_of(
        mutated(regions().map(lambda case: case[0])),
        st.text(),
        st.text(ASCII_LOWER + string.digits + "-", max_size=24),
    )
)
@example("us-east-99")
@example("us-east-100")
@example("us-gov-west-1")
@example("us-isob-east-1")
@example("us-east-1\n")
@PROPERTY
def test_region_accepts_exactly_the_shape(value: str) -> None:
    """Any text is accepted unchanged exactly when it has a region's shape, otherwise refused
    with BadRequest; a region of an isolated partition is then refused for every partition."""
    if not region_oracle(value):
        with pytest.raises(BadRequest, match=r"^invalid region"):
            validation.region(value)
        return
    assert validation.region(value) == value
    matching = [
        partition
        for partition in validation.PARTITIONS
        if attempt(validation.region_matches_partition, value, partition) is None
    ]
    assert len(matching) == (0 if "-iso" in value else 1)


def test_no_region_means_the_default() -> None:
    """An omitted region is us-east-1, in the aws partition."""
    assert validation.region(None) == validation.DEFAULT_REGION == "us-east-1"


@given(any_object().filter(lambda value: value is not None))
@PROPERTY
def test_region_refuses_non_strings(value: object) -> None:
    """A non-string region is BadRequest, never a TypeError."""
    with pytest.raises(BadRequest):
        validation.region(value)


# -- issuer URLs (the setup generator's provider URL) ------------------------------------------

hosts = st.text(ASCII_LOWER + string.digits + ".-", min_size=1, max_size=30)


@given(
    st.one_of(
        mutated(
            st.builds("https://{}/{}".format, hosts, st.text(ASCII_LOWER, max_size=10)),
            NEAR + "[]?#%@",
        ),
        st.builds("http://{}:{}".format, hosts, st.integers(0, 99999)),
        st.text("https:/[]?#%@.a0 \t", max_size=24),
        st.text(),
    ),
    st.booleans(),
)
@example("https://[", False)
@example(" https://issuer.example.com", False)
@example("https://issuer.example.com\t/x", False)
@example("http://127.0.0.1:99999", True)
@PROPERTY
def test_issuer_url_is_a_provider_url_or_refused(url: str, dev: bool) -> None:
    """Any issuer URL gives the provider's host path (the URL without its scheme) or BadRequest
    saying what an IAM OIDC provider URL must look like; nothing else is raised."""
    host_path = attempt(issuer_host_path, url, dev=dev)
    if isinstance(host_path, BadRequest):
        assert "cannot be an IAM OIDC provider URL" in host_path.message
        return
    assert url.endswith("://" + host_path)
    assert url.startswith("https://") or (dev and url.startswith("http://"))
    assert not host_path.endswith("/")
    assert len(url) <= 255
