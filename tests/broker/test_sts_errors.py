"""classify(): each STS failure is recoverable or not, with a message that says what to fix."""

from __future__ import annotations

import pytest
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ParamValidationError,
    ReadTimeoutError,
)

from broker.errors import CredentialsRejected, CredentialsUnavailable
from broker.sts_errors import classify
from tests.broker.fakes import ROLE_ARN, TOKEN

WEB = "AssumeRoleWithWebIdentity"
ASSUME = "AssumeRole"
ENDPOINT = "https://sts.us-east-1.amazonaws.com"


def client_error(code: str, message: str = "", status: int = 400, action: str = WEB) -> ClientError:
    return ClientError(
        {
            "Error": {"Code": code, "Message": message},
            "ResponseMetadata": {
                "RequestId": "req-1",
                "HostId": "",
                "HTTPStatusCode": status,
                "HTTPHeaders": {},
                "RetryAttempts": 0,
            },
        },
        action,
    )


@pytest.mark.parametrize(
    ("code", "message", "status", "retry_after"),
    [
        ("Throttling", "Rate exceeded", 400, 10),
        ("ThrottlingException", "Rate exceeded", 400, 10),
        ("RequestLimitExceeded", "Request limit exceeded.", 400, 10),
        ("TooManyRequests", "", 429, 10),
        ("IDPCommunicationError", "Could not communicate with the identity provider", 400, 5),
        ("InternalFailure", "", 500, 5),
        ("ServiceUnavailable", "Service unavailable", 503, 5),
        ("SomethingNewAndBroken", "", 502, 5),
        (
            "InvalidIdentityToken",
            "Couldn't retrieve verification key from your identity provider, please reference "
            "AssumeRoleWithWebIdentity documentation for requirements",
            400,
            5,
        ),
    ],
)
def test_recoverable_codes(code: str, message: str, status: int, retry_after: int) -> None:
    """Throttling, 5xx, IdP communication and JWKS fetch failures are retried later."""
    error = classify(client_error(code, message, status), action=WEB, role_arn=ROLE_ARN)
    assert type(error) is CredentialsUnavailable
    assert error.sts_code == code
    assert error.retry_after == retry_after
    assert ROLE_ARN in error.message
    assert code in error.message


@pytest.mark.parametrize(
    ("code", "message", "action", "fragments"),
    [
        (
            "AccessDenied",
            "Not authorized to perform sts:AssumeRoleWithWebIdentity",
            WEB,
            ["trust policy", ":aud", ":sub", "OIDC provider"],
        ),
        (
            "AccessDenied",
            "User: arn:aws:sts::111122223333:assumed-role/broker/i-0abc is not authorized to "
            "perform: sts:AssumeRole on resource: " + ROLE_ARN,
            ASSUME,
            ["trust policy", "Principal", "sts:ExternalId"],
        ),
        (
            "InvalidIdentityToken",
            "No OpenIDConnect provider found in your account for https://issuer.example.test",
            WEB,
            ["no IAM OIDC provider", "issuer URL"],
        ),
        ("InvalidIdentityToken", "Incorrect token audience", WEB, ["aud", "client ID"]),
        ("InvalidIdentityToken", "Missing a required claim: aud", WEB, ["client ID"]),
        ("InvalidIdentityToken", "Signature verification failed", WEB, ["JWKS", "aud"]),
        ("ExpiredTokenException", "Token expired: current date/time 1 ...", WEB, ["clock"]),
        ("IDPRejectedClaim", "Claim rejected", WEB, ["claims"]),
        (
            "ValidationError",
            "The requested DurationSeconds exceeds the MaxSessionDuration set for this role.",
            WEB,
            ["MaxSessionDuration", "update-role"],
        ),
        (
            "ValidationError",
            "The requested DurationSeconds exceeds the 1 hour session limit for roles assumed by "
            "role chaining.",
            ASSUME,
            ["role chaining", "3600"],
        ),
        (
            "ValidationError",
            "1 validation error detected: Value 'a b' at 'roleSessionName' failed to satisfy "
            "constraint",
            WEB,
            ["session name", "2-64"],
        ),
        ("ValidationError", "Something else is off", WEB, ["session duration", "session name"]),
        ("MalformedPolicyDocument", "Syntax errors in policy.", WEB, ["session_policy"]),
        ("PackedPolicyTooLarge", "Session policy too large: 112%", ASSUME, ["packed size"]),
        ("RegionDisabledException", "STS is not activated in this region", WEB, ["activate"]),
        (
            "InvalidClientTokenId",
            "The security token included in the request is invalid.",
            ASSUME,
            ["access key", "instance role"],
        ),
        ("SomeFutureCode", "", WEB, ["retrying will not help"]),
    ],
)
def test_irrecoverable_codes(code: str, message: str, action: str, fragments: list[str]) -> None:
    """Configuration errors are rejected with the STS code and a hint naming cause and fix."""
    error = classify(client_error(code, message, 403, action), action=action, role_arn=ROLE_ARN)
    assert type(error) is CredentialsRejected
    assert error.sts_code == code
    assert error.hint is not None
    for fragment in fragments:
        assert fragment in error.hint
    assert ROLE_ARN in error.message
    assert f"sts:{action}" in error.message
    assert error.hint in error.message


@pytest.mark.parametrize(
    "exc",
    [
        EndpointConnectionError(endpoint_url=ENDPOINT),
        ConnectTimeoutError(endpoint_url=ENDPOINT),
        ReadTimeoutError(endpoint_url=ENDPOINT),
        ConnectionClosedError(endpoint_url=ENDPOINT),
    ],
    ids=lambda exc: type(exc).__name__,
)
def test_network_errors_are_recoverable(exc: Exception) -> None:
    """Timeouts and connection failures are retried later and name the endpoint."""
    error = classify(exc, action=ASSUME, role_arn=ROLE_ARN)
    assert type(error) is CredentialsUnavailable
    assert error.sts_code is None
    assert error.retry_after == 5
    assert ENDPOINT in error.message
    assert type(exc).__name__ in error.message


def test_parameter_validation_is_irrecoverable() -> None:
    """A request botocore refuses to send (bad parameter) will not get better by retrying."""
    exc = ParamValidationError(report="Invalid length for parameter RoleSessionName, value: 1")
    error = classify(exc, action=WEB, role_arn=ROLE_ARN)
    assert type(error) is CredentialsRejected
    assert error.hint is not None
    assert "session name" in error.hint


@pytest.mark.parametrize("code", ["InvalidIdentityToken", "ServiceUnavailable"])
def test_messages_never_carry_a_token(code: str) -> None:
    """A token echoed in an STS message is scrubbed before it reaches our error."""
    exc = client_error(code, f"token {TOKEN} is not valid", 400 if code[0] == "I" else 503)
    error = classify(exc, action=WEB, role_arn=ROLE_ARN)
    assert TOKEN not in str(error)
    assert TOKEN.split(".")[1] not in str(error)
    assert "<token>" in str(error)


def test_long_messages_are_truncated() -> None:
    """An unexpectedly long STS message is cut to a readable length."""
    error = classify(client_error("AccessDenied", "x" * 5000, 403), action=WEB, role_arn=ROLE_ARN)
    assert len(error.message) < 2000
