"""AssumeRole through the gate: caller authentication, trust policy principals, ExternalId and
the role-chaining cap."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.e2e import RunningWarrant
from tests.standin.conftest import (
    ACME_AUDIENCE,
    ACME_SUBJECT,
    Aws,
    mint,
    pinned,
    refusal,
    web_identity,
)

pytestmark = pytest.mark.usefixtures("fresh")

ACCOUNT = "123456789012"
EXTERNAL_ID = "acme-7f3a9c"
INSTANCE_ROLE = f"arn:aws:iam::{ACCOUNT}:role/ec2-broker"
INSTANCE_SESSION = f"arn:aws:sts::{ACCOUNT}:assumed-role/ec2-broker/i-0123456789abcdef0"


def customer_trust(principal: Any, external_id: str | None = EXTERNAL_ID) -> dict[str, Any]:
    statement: dict[str, Any] = {
        "Effect": "Allow",
        "Principal": principal if principal == "*" else {"AWS": principal},
        "Action": "sts:AssumeRole",
    }
    if external_id is not None:
        statement["Condition"] = {"StringEquals": {"sts:ExternalId": external_id}}
    return {"Version": "2012-10-17", "Statement": [statement]}


def broker_session(aws: Aws, warrant: RunningWarrant) -> tuple[str, dict[str, Any]]:
    """(broker role ARN, its web-identity session's credentials and ARN)."""
    role = aws.role(pinned(warrant.issuer_url, ACME_AUDIENCE, ACME_SUBJECT))
    result = web_identity(aws, role, mint(warrant), RoleSessionName="broker")
    return role, {**result["Credentials"], "Arn": result["AssumedRoleUser"]["Arn"]}


def assume(aws: Aws, credentials: dict[str, Any], role: str, **params: Any) -> Any:
    client = params.pop("client", {})
    return aws.sts(credentials, **client).assume_role(
        RoleArn=role, RoleSessionName="customer", **params
    )


def test_correct_external_id_is_allowed(aws: Aws, warrant: RunningWarrant) -> None:
    """The broker's role session assumes the customer role with the right ExternalId."""
    broker_role, session = broker_session(aws, warrant)
    customer = aws.role(customer_trust(broker_role))
    result = assume(aws, session, customer, ExternalId=EXTERNAL_ID)
    name = customer.rsplit("/", 1)[1]
    expected = f"arn:aws:sts::{ACCOUNT}:assumed-role/{name}/customer"
    assert result["AssumedRoleUser"]["Arn"] == expected
    assert aws.sts(result["Credentials"]).get_caller_identity()["Arn"] == expected


@pytest.mark.parametrize("external_id", [None, "acme-wrong1"])
def test_missing_or_wrong_external_id_is_denied(
    aws: Aws, warrant: RunningWarrant, external_id: str | None
) -> None:
    """Without the ExternalId the trust policy requires, AssumeRole is AccessDenied 403."""
    broker_role, session = broker_session(aws, warrant)
    customer = aws.role(customer_trust(broker_role))
    params = {} if external_id is None else {"ExternalId": external_id}
    error = refusal(lambda: assume(aws, session, customer, **params))
    assert (error.code, error.status) == ("AccessDenied", 403)
    assert error.message == (
        f"User: {session['Arn']} is not authorized to perform: sts:AssumeRole on resource: "
        f"{customer}"
    )


@pytest.mark.parametrize("external_id", ["x", "has space", "x" * 1225])
def test_malformed_external_id_is_refused(
    aws: Aws, warrant: RunningWarrant, external_id: str
) -> None:
    """ExternalId must be 2-1224 characters of [\\w+=,.@:/-]."""
    broker_role, session = broker_session(aws, warrant)
    customer = aws.role(customer_trust(broker_role, external_id=None))
    error = refusal(
        lambda: assume(aws, session, customer, ExternalId=external_id, client={"validate": False})
    )
    assert error.code == "ValidationError"


@pytest.mark.parametrize(
    ("principal_of", "allowed"),
    [
        pytest.param(lambda role: role, True, id="role arn"),
        pytest.param(lambda role: [f"arn:aws:iam::{ACCOUNT}:role/other", role], True, id="list"),
        pytest.param(lambda role: f"arn:aws:iam::{ACCOUNT}:root", True, id="account root"),
        pytest.param(lambda role: ACCOUNT, True, id="account id"),
        pytest.param(lambda role: "*", True, id="anyone"),
        pytest.param(lambda role: f"arn:aws:iam::{ACCOUNT}:role/other", False, id="other role"),
        pytest.param(lambda role: "arn:aws:iam::210987654321:root", False, id="other account"),
    ],
)
def test_trust_policy_principals(
    aws: Aws, warrant: RunningWarrant, principal_of: Any, allowed: bool
) -> None:
    """The caller matches its role ARN, its account (root or id) and *, nothing else."""
    broker_role, session = broker_session(aws, warrant)
    customer = aws.role(customer_trust(principal_of(broker_role)))

    def call() -> Any:
        return assume(aws, session, customer, ExternalId=EXTERNAL_ID)

    if allowed:
        assert call()["Credentials"]
    else:
        assert refusal(call).code == "AccessDenied"


def test_unknown_caller_is_refused(aws: Aws) -> None:
    """Keys the gate never saw issued or registered get InvalidClientTokenId 403."""
    stranger = {"AccessKeyId": "ASIASTRANGER00000000", "SecretAccessKey": "s", "SessionToken": "t"}
    customer = aws.role(customer_trust("*", external_id=None))
    error = refusal(lambda: assume(aws, stranger, customer))
    assert (error.code, error.status) == ("InvalidClientTokenId", 403)
    assert error.message == "The security token included in the request is invalid."


def test_unsigned_assume_role_is_refused(standin_url: str, aws: Aws) -> None:
    """AssumeRole without a signature gets MissingAuthenticationToken."""
    form = {
        "Action": "AssumeRole",
        "Version": "2011-06-15",
        "RoleArn": aws.role(customer_trust("*", external_id=None)),
        "RoleSessionName": "customer",
    }
    response = httpx.post(standin_url, data=form, timeout=5)
    assert response.status_code == 403
    assert "<Code>MissingAuthenticationToken</Code>" in response.text


@pytest.mark.parametrize(
    ("field", "code"),
    [("SecretAccessKey", "SignatureDoesNotMatch"), ("SessionToken", "InvalidClientTokenId")],
)
def test_tampered_credentials_are_refused(
    aws: Aws, warrant: RunningWarrant, field: str, code: str
) -> None:
    """A wrong secret breaks the signature and a wrong session token is invalid."""
    broker_role, session = broker_session(aws, warrant)
    customer = aws.role(customer_trust(broker_role))
    tampered = {**session, field: session[field][:-4] + "AAAA"}
    error = refusal(lambda: assume(aws, tampered, customer, ExternalId=EXTERNAL_ID))
    assert (error.code, error.status) == (code, 403)
    assert refusal(lambda: aws.sts(tampered).get_caller_identity()).code == code


@pytest.mark.parametrize(("duration", "allowed"), [(3600, True), (3601, False), (43200, False)])
def test_role_chaining_caps_the_session_at_an_hour(
    aws: Aws, warrant: RunningWarrant, duration: int, allowed: bool
) -> None:
    """A role session assuming another role may not ask for more than 3600 s."""
    broker_role, session = broker_session(aws, warrant)
    customer = aws.role(customer_trust(broker_role), max_session=43200)

    def call() -> Any:
        return assume(aws, session, customer, ExternalId=EXTERNAL_ID, DurationSeconds=duration)

    if allowed:
        assert call()["Credentials"]
    else:
        error = refusal(call)
        assert error.code == "ValidationError"
        assert error.message == (
            "The requested DurationSeconds exceeds the 1 hour session limit for roles assumed "
            "by role chaining."
        )


def test_chained_sessions_are_chained_again(aws: Aws, warrant: RunningWarrant) -> None:
    """Credentials from AssumeRole are themselves a role session, capped when used again."""
    broker_role, session = broker_session(aws, warrant)
    middle = aws.role(customer_trust(broker_role), max_session=43200)
    hop = assume(aws, session, middle, ExternalId=EXTERNAL_ID)["Credentials"]
    last = aws.role(customer_trust(middle, external_id=None), max_session=43200)
    assert refusal(lambda: assume(aws, hop, last, DurationSeconds=7200)).code == "ValidationError"


def register_instance_role(aws: Aws, access_key: str) -> None:
    response = aws.admin(
        "POST",
        "/principals",
        {"access_key_id": access_key, "arn": INSTANCE_SESSION, "role_arn": INSTANCE_ROLE},
    )
    assert response.status_code == 201, response.text


def test_registered_instance_role_is_not_chaining(aws: Aws) -> None:
    """An EC2 instance role registered through the admin API may ask for 12 hours."""
    register_instance_role(aws, "ASIAINSTANCE00000001")
    imds = {"AccessKeyId": "ASIAINSTANCE00000001", "SecretAccessKey": "x", "SessionToken": "y"}
    customer = aws.role(customer_trust(INSTANCE_ROLE), max_session=43200)
    result = assume(aws, imds, customer, ExternalId=EXTERNAL_ID, DurationSeconds=43200)
    assert result["Credentials"]["AccessKeyId"]
    error = refusal(lambda: assume(aws, imds, customer, DurationSeconds=43200))
    assert error.message.startswith(f"User: {INSTANCE_SESSION} is not authorized")


def test_forgotten_principal_is_unknown(aws: Aws) -> None:
    """A registered principal that is deleted again is no longer a valid caller."""
    register_instance_role(aws, "ASIAINSTANCE00000002")
    assert aws.admin("DELETE", "/principals/ASIAINSTANCE00000002").status_code == 204
    assert aws.admin("DELETE", "/principals/ASIAINSTANCE00000002").status_code == 404
    imds = {"AccessKeyId": "ASIAINSTANCE00000002", "SecretAccessKey": "x", "SessionToken": "y"}
    customer = aws.role(customer_trust(INSTANCE_ROLE, external_id=None))
    assert refusal(lambda: assume(aws, imds, customer)).code == "InvalidClientTokenId"


@pytest.mark.parametrize(
    "body",
    [
        {"arn": INSTANCE_SESSION},
        {"access_key_id": "ASIAX"},
        {"access_key_id": 5, "arn": INSTANCE_SESSION},
        {"access_key_id": "ASIAX", "arn": INSTANCE_SESSION, "expires_at": "soon"},
        ["not", "an", "object"],
    ],
)
def test_principal_registration_checks_its_input(aws: Aws, body: Any) -> None:
    """Registering a principal needs string access_key_id and arn, and a valid expires_at."""
    assert aws.admin("POST", "/principals", body).status_code == 400


def test_unknown_target_role_is_denied(aws: Aws, warrant: RunningWarrant) -> None:
    """Assuming a role that does not exist is AccessDenied, naming the caller and the role."""
    _, session = broker_session(aws, warrant)
    missing = f"arn:aws:iam::{ACCOUNT}:role/not-there"
    error = refusal(lambda: assume(aws, session, missing, ExternalId=EXTERNAL_ID))
    assert (error.code, error.status) == ("AccessDenied", 403)
    assert error.message.endswith(f"on resource: {missing}")


def test_session_tags_need_tag_session(aws: Aws, warrant: RunningWarrant) -> None:
    """Tags on AssumeRole are denied unless the trust policy allows sts:TagSession too."""
    broker_role, session = broker_session(aws, warrant)
    tags = [{"Key": "tenant", "Value": "acme"}]
    plain = aws.role(customer_trust(broker_role))
    error = refusal(lambda: assume(aws, session, plain, ExternalId=EXTERNAL_ID, Tags=tags))
    assert error.code == "AccessDenied"
    policy = customer_trust(broker_role)
    policy["Statement"][0]["Action"] = ["sts:AssumeRole", "sts:TagSession"]
    tagging = aws.role(policy)
    assert assume(aws, session, tagging, ExternalId=EXTERNAL_ID, Tags=tags)["Credentials"]
