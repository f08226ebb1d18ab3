"""AssumeRoleWithWebIdentity through the gate, with tokens from the real Warrant issuer and from
a throwaway IdP, checked the way STS checks them."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import jwt
import pytest

from tests.e2e import RunningWarrant
from tests.standin.conftest import (
    ACME_AUDIENCE,
    ACME_SUBJECT,
    Aws,
    mint,
    pinned,
    provider_arn,
    refusal,
    web_identity,
    web_identity_trust,
)
from tests.standin.idp import AUDIENCE, EC_KID, RSA_KID, SUBJECT, FakeIdp

pytestmark = pytest.mark.usefixtures("fresh")

DENIED = "Not authorized to perform sts:AssumeRoleWithWebIdentity"
KEY_UNAVAILABLE = "Couldn't retrieve verification key from your identity provider"


def acme_role(aws: Aws, warrant: RunningWarrant, **options: Any) -> str:
    return aws.role(pinned(warrant.issuer_url, ACME_AUDIENCE, ACME_SUBJECT), **options)


def fake_role(aws: Aws, idp: FakeIdp) -> str:
    return aws.role(pinned(idp.issuer, AUDIENCE, SUBJECT))


def test_warrant_token_buys_credentials_for_the_role(aws: Aws, warrant: RunningWarrant) -> None:
    """A real Warrant token for a pinned role yields credentials that act as the assumed role."""
    role = acme_role(aws, warrant)
    result = web_identity(aws, role, mint(warrant))

    name = role.rsplit("/", 1)[1]
    assumed = f"arn:aws:sts::123456789012:assumed-role/{name}/sbx-1"
    assert result["AssumedRoleUser"]["Arn"] == assumed
    assert result["SubjectFromWebIdentityToken"] == ACME_SUBJECT
    assert result["Audience"] == ACME_AUDIENCE
    assert result["Provider"] == provider_arn(warrant.issuer_url)
    left = (result["Credentials"]["Expiration"] - datetime.now(UTC)).total_seconds()
    assert 3500 < left <= 3600
    assert aws.sts(result["Credentials"]).get_caller_identity()["Arn"] == assumed


def test_expiration_is_written_as_aws_does(standin_url: str, aws: Aws, fake_idp: FakeIdp) -> None:
    """Expiration comes back in whole seconds with a Z, not moto's microseconds."""
    response = httpx.post(
        standin_url,
        data={
            "Action": "AssumeRoleWithWebIdentity",
            "Version": "2011-06-15",
            "RoleArn": fake_role(aws, fake_idp),
            "RoleSessionName": "sbx-1",
            "WebIdentityToken": fake_idp.token(),
        },
        timeout=5,
    )
    assert response.status_code == 200, response.text
    stamp = response.text.split("<Expiration>")[1].split("</Expiration>")[0]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", stamp), stamp


def test_es256_tokens_are_accepted(aws: Aws, fake_idp: FakeIdp) -> None:
    """An ES256 token whose kid names the published P-256 key is verified and accepted."""
    result = web_identity(aws, fake_role(aws, fake_idp), fake_idp.token(kid=EC_KID, alg="ES256"))
    assert result["Credentials"]["AccessKeyId"]


def test_unregistered_issuer_is_refused(aws: Aws, fake_idp: FakeIdp) -> None:
    """A token whose iss has no IAM OIDC provider is refused with AWS's message."""
    issuer = fake_idp.issuer + "/elsewhere"
    token = fake_idp.token(fake_idp.claims(iss=issuer))
    error = refusal(lambda: web_identity(aws, fake_role(aws, fake_idp), token))
    assert (error.code, error.status) == ("InvalidIdentityToken", 400)
    assert error.message == f"No OpenIDConnect provider found in your account for {issuer}"


def test_audience_outside_the_client_ids_is_refused(aws: Aws, warrant: RunningWarrant) -> None:
    """A Warrant token for a tenant whose audience is not on the provider is refused."""
    role = aws.role(pinned(warrant.issuer_url, "globex-oidc-service", "tenant:globex:sbx-1"))
    error = refusal(lambda: web_identity(aws, role, mint(warrant, "globex")))
    assert (error.code, error.message) == ("InvalidIdentityToken", "Incorrect token audience")


@pytest.mark.parametrize(
    ("claims", "message"),
    [
        ({"aud": None}, "Missing a required claim: aud"),
        ({"sub": None}, "Missing a required claim: sub"),
        ({"exp": None}, "Missing a required claim: exp"),
        ({"aud": [AUDIENCE, "other"]}, "Incorrect token audience"),
        # Times are functions of the moment the test runs (not of collection, which may be
        # many minutes earlier in a long run).
        ({"iat": lambda now: now}, "The iat claim must be an integer"),
        ({"exp": lambda now: now + 300}, "The exp claim must be an integer"),
        ({"nbf": lambda now: now}, "The nbf claim must be an integer"),
        ({"nbf": lambda now: int(now) + 900}, "The token is not yet valid"),
    ],
)
def test_bad_claims_are_refused(
    aws: Aws, fake_idp: FakeIdp, claims: dict[str, Any], message: str
) -> None:
    """Missing aud/sub/exp, several audiences, float NumericDates and a future nbf are refused."""
    now = time.time()
    resolved = {name: value(now) if callable(value) else value for name, value in claims.items()}
    token = fake_idp.token(fake_idp.claims(**resolved))
    error = refusal(lambda: web_identity(aws, fake_role(aws, fake_idp), token))
    assert error.code == "InvalidIdentityToken"
    assert error.message.startswith(message)


def test_single_audience_array_is_accepted(aws: Aws, fake_idp: FakeIdp) -> None:
    """A one-element aud array, as Kubernetes issues, counts as that audience."""
    token = fake_idp.token(fake_idp.claims(aud=[AUDIENCE]))
    assert web_identity(aws, fake_role(aws, fake_idp), token)["Audience"] == AUDIENCE


def test_token_expired_beyond_the_skew_is_refused(aws: Aws, fake_idp: FakeIdp) -> None:
    """A token past exp by more than five minutes gets ExpiredTokenException."""
    now = int(time.time())
    token = fake_idp.token(fake_idp.claims(iat=now - 900, nbf=now - 900, exp=now - 400))
    error = refusal(lambda: web_identity(aws, fake_role(aws, fake_idp), token))
    assert (error.code, error.status) == ("ExpiredTokenException", 400)
    assert error.message.startswith("Token expired: current date/time ")
    assert error.message.endswith(f"must be before the expiration date/time {now - 400}")


def test_token_expired_within_the_skew_is_accepted(aws: Aws, fake_idp: FakeIdp) -> None:
    """A token two minutes past exp is still inside IAM's five-minute allowance."""
    now = int(time.time())
    token = fake_idp.token(fake_idp.claims(iat=now - 600, nbf=now - 600, exp=now - 120))
    assert web_identity(aws, fake_role(aws, fake_idp), token)["Credentials"]


@pytest.mark.parametrize(
    "variant", ["unknown kid", "no kid", "unpublished key", "HS256", "PS256", "ES256 on RSA kid"]
)
def test_tokens_that_do_not_verify_are_refused(aws: Aws, fake_idp: FakeIdp, variant: str) -> None:
    """Unknown or missing kid, a foreign key, and algorithms STS does not take are refused."""
    tokens = {
        "unknown kid": lambda: fake_idp.token(kid="no-such-kid"),
        "no kid": lambda: fake_idp.token(kid=None),
        "unpublished key": lambda: fake_idp.token(key=fake_idp.stranger_key),
        "HS256": lambda: fake_idp.token(alg="HS256", key=b"k" * 32),
        "PS256": lambda: fake_idp.token(alg="PS256"),
        "ES256 on RSA kid": lambda: fake_idp.token(alg="ES256", kid=RSA_KID),
    }
    token = tokens[variant]()
    error = refusal(lambda: web_identity(aws, fake_role(aws, fake_idp), token))
    assert (error.code, error.status) == ("InvalidIdentityToken", 400)


def test_garbage_is_not_a_jwt(aws: Aws, fake_idp: FakeIdp) -> None:
    """A token that is not a JWT at all is refused, unlike by bare moto."""
    error = refusal(lambda: web_identity(aws, fake_role(aws, fake_idp), "not-a-jwt-at-all"))
    assert error.code == "InvalidIdentityToken"


def test_sub_mismatch_in_the_trust_policy_is_denied(aws: Aws, warrant: RunningWarrant) -> None:
    """A role pinned to another subject denies the token with AccessDenied 403."""
    role = aws.role(pinned(warrant.issuer_url, ACME_AUDIENCE, "tenant:acme:sbx-2"))
    error = refusal(lambda: web_identity(aws, role, mint(warrant)))
    assert (error.code, error.status, error.message) == ("AccessDenied", 403, DENIED)


@pytest.mark.parametrize(
    ("pattern", "allowed"),
    [
        ("tenant:acme:*", True),
        ("tenant:acme:sbx-?", True),
        ("tenant:*:sbx-1", True),
        ("tenant:acme:sbx-??", False),
        ("tenant:globex:*", False),
        ("TENANT:acme:*", False),
    ],
)
def test_string_like_on_sub(aws: Aws, warrant: RunningWarrant, pattern: str, allowed: bool) -> None:
    """StringLike matches sub with * and ?, case-sensitively."""
    role = aws.role(pinned(warrant.issuer_url, ACME_AUDIENCE, pattern, operator="StringLike"))
    token = mint(warrant)
    if allowed:
        assert web_identity(aws, role, token)["Credentials"]
    else:
        assert refusal(lambda: web_identity(aws, role, token)).code == "AccessDenied"


@pytest.mark.parametrize(
    "policy_of",
    [
        pytest.param(lambda w, f: web_identity_trust(f.issuer), id="another provider"),
        pytest.param(
            lambda w, f: {
                "Statement": [
                    *web_identity_trust(w.issuer_url)["Statement"],
                    {**web_identity_trust(w.issuer_url)["Statement"][0], "Effect": "Deny"},
                ]
            },
            id="deny wins",
        ),
        pytest.param(
            lambda w, f: web_identity_trust(
                w.issuer_url,
                StringEquals={w.issuer_url.split("://")[1] + ":tenant": "acme"},
            ),
            id="custom claim key",
        ),
        pytest.param(
            lambda w, f: {
                "Statement": [
                    {**web_identity_trust(w.issuer_url)["Statement"][0], "Action": "sts:AssumeRole"}
                ]
            },
            id="other action",
        ),
        pytest.param(
            lambda w, f: web_identity_trust(
                w.issuer_url, NumericLessThan={w.issuer_url.split("://")[1] + ":aud": "5"}
            ),
            id="unsupported operator",
        ),
    ],
)
def test_trust_policies_that_do_not_allow_are_denied(
    aws: Aws, warrant: RunningWarrant, fake_idp: FakeIdp, policy_of: Any
) -> None:
    """Another provider, a matching Deny, custom-claim keys, other actions and unknown
    operators all end in AccessDenied."""
    role = aws.role(policy_of(warrant, fake_idp))
    assert refusal(lambda: web_identity(aws, role, mint(warrant))).code == "AccessDenied"


def test_wildcard_action_and_list_forms_are_allowed(aws: Aws, warrant: RunningWarrant) -> None:
    """Action given as a list with sts:* and Federated as a list still match."""
    statement = web_identity_trust(warrant.issuer_url)["Statement"][0]
    statement["Action"] = ["s3:GetObject", "sts:*"]
    statement["Principal"] = {
        "Federated": ["arn:aws:iam::123456789012:oidc-provider/x", provider_arn(warrant.issuer_url)]
    }
    role = aws.role({"Statement": [statement]})
    assert web_identity(aws, role, mint(warrant))["Credentials"]


def test_unknown_role_is_denied(aws: Aws, warrant: RunningWarrant) -> None:
    """A role that does not exist is AccessDenied, as in AWS."""
    role = "arn:aws:iam::123456789012:role/does-not-exist"
    assert refusal(lambda: web_identity(aws, role, mint(warrant))).code == "AccessDenied"


def test_role_path_must_match(aws: Aws, warrant: RunningWarrant) -> None:
    """The RoleArn must name the role's real path, not just its name."""
    role = acme_role(aws, warrant, path="/tenants/")
    wrong = role.replace("/tenants/", "/")
    assert refusal(lambda: web_identity(aws, wrong, mint(warrant))).code == "AccessDenied"
    assert web_identity(aws, role, mint(warrant))["Credentials"]


@pytest.mark.parametrize(
    ("max_session", "duration", "expected"),
    [
        (3600, 3600, None),
        (
            3600,
            3601,
            "The requested DurationSeconds exceeds the MaxSessionDuration set for this role.",
        ),
        (43200, 43200, None),
        (43200, 43201, "1 validation error detected"),
        (3600, 899, "1 validation error detected"),
    ],
)
def test_duration_limits(
    aws: Aws,
    warrant: RunningWarrant,
    max_session: int,
    duration: int,
    expected: str | None,
) -> None:
    """DurationSeconds must be 900-43200 and within the role's MaxSessionDuration."""
    role = acme_role(aws, warrant, max_session=max_session)

    def call() -> Any:
        return web_identity(
            aws, role, mint(warrant), DurationSeconds=duration, client={"validate": False}
        )

    if expected is None:
        assert call()["Credentials"]
    else:
        error = refusal(call)
        assert error.code == "ValidationError"
        assert error.message.startswith(expected)


@pytest.mark.parametrize(
    ("name", "value", "code"),
    [
        ("Tags.member.1.Key", "team", "ValidationError"),
        ("TransitiveTagKeys.member.1", "team", "ValidationError"),
        ("ExternalId", "ext-123", "ValidationError"),
        ("SourceIdentity", "someone", "ValidationError"),
        ("ProviderId", "www.amazon.com", "InvalidParameterValue"),
    ],
)
def test_parameters_web_identity_does_not_take_are_refused(
    standin_url: str, aws: Aws, fake_idp: FakeIdp, name: str, value: str, code: str
) -> None:
    """Tags, ExternalId, SourceIdentity and ProviderId sent with an OIDC token are refused."""
    form = {
        "Action": "AssumeRoleWithWebIdentity",
        "Version": "2011-06-15",
        "RoleArn": fake_role(aws, fake_idp),
        "RoleSessionName": "sbx-1",
        "WebIdentityToken": fake_idp.token(),
        name: value,
    }
    response = httpx.post(standin_url, data=form, timeout=5)
    assert response.status_code == 400
    assert f"<Code>{code}</Code>" in response.text


@pytest.mark.parametrize("session_name", ["a", "has space", "x" * 65, "semi;colon", "tenant/acme"])
def test_bad_role_session_names_are_refused(aws: Aws, fake_idp: FakeIdp, session_name: str) -> None:
    """RoleSessionName must be 2-64 characters of [\\w+=,.@-]."""
    error = refusal(
        lambda: web_identity(
            aws,
            fake_role(aws, fake_idp),
            fake_idp.token(),
            RoleSessionName=session_name,
            client={"validate": False},
        )
    )
    assert error.code == "ValidationError"


@pytest.mark.parametrize("length", [3, 20001])
def test_token_length_limits(aws: Aws, fake_idp: FakeIdp, length: int) -> None:
    """WebIdentityToken must be 4-20000 characters."""
    error = refusal(
        lambda: web_identity(
            aws, fake_role(aws, fake_idp), "x" * length, client={"validate": False}
        )
    )
    assert error.code == "ValidationError"


def test_discovery_issuer_must_equal_iss(aws: Aws, fake_idp: FakeIdp) -> None:
    """A discovery document naming another issuer (here: a trailing slash) is refused."""
    fake_idp.discovery_issuer = fake_idp.issuer + "/"
    error = refusal(lambda: web_identity(aws, fake_role(aws, fake_idp), fake_idp.token()))
    assert error.code == "InvalidIdentityToken"
    assert ".well-known/openid-configuration" in error.message


@pytest.mark.parametrize("status", [404, 500, 503])
def test_unavailable_discovery_is_refused(aws: Aws, fake_idp: FakeIdp, status: int) -> None:
    """A discovery document that is not HTTP 200 means the key cannot be retrieved."""
    fake_idp.discovery_status = status
    error = refusal(lambda: web_identity(aws, fake_role(aws, fake_idp), fake_idp.token()))
    assert error.code == "InvalidIdentityToken"
    assert error.message.startswith(KEY_UNAVAILABLE)


@pytest.mark.parametrize(
    ("cache_control", "fetches"),
    [("public, max-age=300", 1), ("no-cache", 2), ("max-age=0", 2), (None, 2)],
)
def test_idp_documents_are_cached_as_their_headers_say(
    aws: Aws, fake_idp: FakeIdp, cache_control: str | None, fetches: int
) -> None:
    """Discovery and JWKS are reused for max-age and refetched on every call otherwise."""
    fake_idp.cache_control = cache_control
    role = fake_role(aws, fake_idp)
    web_identity(aws, role, fake_idp.token())
    web_identity(aws, role, fake_idp.token())
    assert fake_idp.hits == {"discovery": fetches, "jwks": fetches}


def test_unknown_kid_refetches_the_cached_jwks_once(aws: Aws, fake_idp: FakeIdp) -> None:
    """A kid missing from a cached JWKS causes exactly one refetch, which finds a new key."""
    role = fake_role(aws, fake_idp)
    web_identity(aws, role, fake_idp.token())
    new_key = fake_idp.stranger_key
    fake_idp.publish(new_key, "fake-rsa-2")
    assert web_identity(aws, role, fake_idp.token(kid="fake-rsa-2", key=new_key))["Credentials"]
    assert fake_idp.hits["jwks"] == 2
    assert refusal(lambda: web_identity(aws, role, fake_idp.token(kid="gone"))).code == (
        "InvalidIdentityToken"
    )
    assert fake_idp.hits["jwks"] == 3


def test_session_tags_in_the_token_need_tag_session(aws: Aws, fake_idp: FakeIdp) -> None:
    """A token carrying session tags is denied unless the trust policy allows sts:TagSession."""
    tags = {"principal_tags": {"tenant": ["acme"]}, "transitive_tag_keys": ["tenant"]}
    token = fake_idp.token(fake_idp.claims(**{"https://aws.amazon.com/tags": tags}))
    plain = fake_role(aws, fake_idp)
    assert refusal(lambda: web_identity(aws, plain, token)).code == "AccessDenied"
    policy = pinned(fake_idp.issuer, AUDIENCE, SUBJECT)
    policy["Statement"][0]["Action"] = ["sts:AssumeRoleWithWebIdentity", "sts:TagSession"]
    assert web_identity(aws, aws.role(policy), token)["Credentials"]


def test_tokens_are_never_logged(
    aws: Aws, fake_idp: FakeIdp, caplog: pytest.LogCaptureFixture
) -> None:
    """Neither a good nor a refused token appears in the gate's log."""
    caplog.set_level("DEBUG", logger="broker.standin")
    good, bad = fake_idp.token(), fake_idp.token(kid="no-such-kid")
    role = fake_role(aws, fake_idp)
    web_identity(aws, role, good)
    refusal(lambda: web_identity(aws, role, bad))
    logged = caplog.text + json.dumps([r.args for r in caplog.records], default=str)
    assert "verified token" in logged
    for token in (good, bad):
        assert token not in logged
        assert token.split(".")[2] not in logged
    assert jwt.get_unverified_header(good)["kid"] in logged
