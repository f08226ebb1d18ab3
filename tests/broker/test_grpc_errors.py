"""The one mapping from Warrant's errors to gRPC status codes and rich details."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from broker.delivery.grpc_errors import STATUS_DETAILS_KEY, field_of, to_grpc_error
from broker.errors import CredentialsRejected, CredentialsUnavailable
from broker.rpc.generate import main as generate
from issuer.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    IssuerError,
    NotFound,
    TenantExists,
    Unauthenticated,
    Unavailable,
    UnknownTenant,
)
from keys.errors import KeyStoreLocked, RotationRefused, UnknownKey
from keys.kms import KmsUnavailable

FIELDS = ("tenant", "integration", "ttl_seconds", "session_policy", "delivery")


def status_of(details: bytes) -> status_pb2.Status:
    status = status_pb2.Status()
    status.ParseFromString(details)
    return status


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (Unauthenticated("no key"), grpc.StatusCode.UNAUTHENTICATED),
        (Forbidden("wrong role"), grpc.StatusCode.PERMISSION_DENIED),
        (NotFound("no such sandbox"), grpc.StatusCode.NOT_FOUND),
        (UnknownTenant("acme"), grpc.StatusCode.NOT_FOUND),
        (UnknownKey("kid"), grpc.StatusCode.NOT_FOUND),
        (TenantExists("acme"), grpc.StatusCode.ALREADY_EXISTS),
        (Conflict("in use"), grpc.StatusCode.FAILED_PRECONDITION),
        (RotationRefused("too soon"), grpc.StatusCode.FAILED_PRECONDITION),
        (
            CredentialsRejected("refused", sts_code="AccessDenied"),
            grpc.StatusCode.FAILED_PRECONDITION,
        ),
        (Unavailable("database down"), grpc.StatusCode.UNAVAILABLE),
        (KeyStoreLocked("locked"), grpc.StatusCode.UNAVAILABLE),
        (
            KmsUnavailable("kms:Sign throttled", code="ThrottlingException"),
            grpc.StatusCode.UNAVAILABLE,
        ),
        (CredentialsUnavailable("throttled", retry_after=9), grpc.StatusCode.UNAVAILABLE),
        (TimeoutError(), grpc.StatusCode.DEADLINE_EXCEEDED),
        (IssuerError("broken"), grpc.StatusCode.INTERNAL),
        (RuntimeError("secret detail"), grpc.StatusCode.INTERNAL),
        (BadRequest("tenant is required"), grpc.StatusCode.INVALID_ARGUMENT),
    ],
)
def test_every_error_has_a_code_and_never_unknown(exc: Exception, code: grpc.StatusCode) -> None:
    """Each error class maps to its documented code; the status details repeat code and
    message, so rich-status clients and plain ones agree."""
    error = to_grpc_error(exc, request_id="rid1", fields=FIELDS)
    assert error.code is code
    status = status_of(error.details)
    assert status.code == code.value[0]
    assert status.message == error.message
    assert dict(error.trailing_metadata("rid1"))["x-request-id"] == "rid1"
    assert STATUS_DETAILS_KEY in dict(error.trailing_metadata("rid1"))


def test_unexpected_errors_show_only_a_request_id() -> None:
    """An unexpected exception's text (which could hold anything) never reaches the client."""
    error = to_grpc_error(RuntimeError("password=hunter2"), request_id="abc")
    assert error.message == "internal error (request id abc)"


def test_retry_info_carries_the_retry_after() -> None:
    """UNAVAILABLE carries google.rpc.RetryInfo with the broker's retry-after."""
    error = to_grpc_error(CredentialsUnavailable("throttled", retry_after=9), request_id="r")
    (packed,) = status_of(error.details).details
    info = error_details_pb2.RetryInfo()
    assert packed.Unpack(info)
    assert info.retry_delay.seconds == 9
    assert "request id r" in error.message


def test_sandbox_callers_never_see_aws_reasons() -> None:
    """With sanitize (a sandbox token's holder), AWS's reasons and hints stay in the log."""
    rejected = CredentialsRejected("AccessDenied for role X", sts_code="AccessDenied", hint="fix")
    error = to_grpc_error(rejected, request_id="r1", sanitize=True)
    assert error.code is grpc.StatusCode.FAILED_PRECONDITION
    assert "AccessDenied" not in error.message
    assert "request id r1" in error.message
    assert not status_of(error.details).details
    outage = to_grpc_error(CredentialsUnavailable("STS 503 from x"), request_id="r2", sanitize=True)
    assert "STS" not in outage.message
    internal = to_grpc_error(IssuerError("detail"), request_id="r3", sanitize=True)
    assert internal.message == "internal error (request id r3)"


def test_rejection_details_for_trusted_callers() -> None:
    """Agents and operators get the STS code, the hint and the diagnosis as ErrorInfo."""
    rejected = CredentialsRejected("refused", sts_code="InvalidIdentityToken", hint="audience")
    rejected.details["diagnosis"] = {"token": {"aud": "acme-oidc-service"}}
    error = to_grpc_error(rejected, request_id="r")
    (packed,) = status_of(error.details).details
    info = error_details_pb2.ErrorInfo()
    assert packed.Unpack(info)
    assert info.reason == "CREDENTIALS_REJECTED"
    assert info.metadata["sts_code"] == "InvalidIdentityToken"
    assert info.metadata["hint"] == "audience"
    assert info.metadata["diagnosis"] == '{"token": {"aud": "acme-oidc-service"}}'


@pytest.mark.parametrize(
    ("message", "field"),
    [
        ("tenant is required", "tenant"),
        ("invalid tenant slug 'X': ...", "tenant"),
        ("ttl_seconds=5 is out of range; allowed: 60 to 3600 seconds", "ttl_seconds"),
        ("session_policy is not valid JSON", "session_policy"),
        ("the policy's tenant must be set", "tenant"),
        ("request body must be at most 65536 bytes", ""),
        ("my_tenant is odd", ""),
        ("integration.tenant differs", "integration"),
    ],
)
def test_field_of_finds_the_field_a_message_names(message: str, field: str) -> None:
    """The field violation names the first request field the message mentions as a word."""
    assert field_of(message, FIELDS) == field


def test_committed_generated_code_is_current() -> None:
    """The committed *_pb2* files equal a fresh protoc run over the .proto (else: run
    `python -m broker.rpc.generate`)."""
    assert generate(["--check"]) == 0
