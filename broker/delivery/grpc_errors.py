"""One mapping from Warrant's errors to gRPC status codes, with the standard rich details
(google.rpc.BadRequest, RetryInfo, ErrorInfo) in `grpc-status-details-bin`.

    BadRequest          INVALID_ARGUMENT   + BadRequest.FieldViolation (the field to fix)
    Unauthenticated     UNAUTHENTICATED
    Forbidden           PERMISSION_DENIED  (the API key has another role)
    NotFound            NOT_FOUND
    TenantExists        ALREADY_EXISTS
    Conflict            FAILED_PRECONDITION
    CredentialsRejected FAILED_PRECONDITION + ErrorInfo (AWS refused: STS code, hint, diagnosis)
    Unavailable (503)   UNAVAILABLE        + RetryInfo (STS or the database is down; retry)
    deadline passed     DEADLINE_EXCEEDED
    anything else       INTERNAL           "internal error", the request id; the log has the rest

A message never carries a traceback or a secret: it is the same text the HTTP API answers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from broker.errors import CredentialsRejected, CredentialsUnavailable
from issuer.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    IssuerError,
    NotFound,
    TenantExists,
    Unauthenticated,
)
from issuer.http import translate

DOMAIN = "warrant.dev"
# First match wins: subclasses before their parents.
_BY_CLASS: tuple[tuple[type[IssuerError], grpc.StatusCode], ...] = (
    (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (Forbidden, grpc.StatusCode.PERMISSION_DENIED),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (TenantExists, grpc.StatusCode.ALREADY_EXISTS),
    (Conflict, grpc.StatusCode.FAILED_PRECONDITION),
)
STATUS_DETAILS_KEY = "grpc-status-details-bin"


@dataclass(frozen=True, slots=True)
class GrpcError:
    code: grpc.StatusCode
    message: str
    details: bytes  # a serialized google.rpc.Status, for grpc-status-details-bin

    def trailing_metadata(self, request_id: str) -> tuple[tuple[str, str | bytes], ...]:
        return ((STATUS_DETAILS_KEY, self.details), ("x-request-id", request_id))


def field_of(message: str, fields: Sequence[str]) -> str:
    """The request field a BadRequest message is about: the first of `fields` it names."""
    found = [
        (match.start(), name)
        for name in fields
        if (match := re.search(rf"(?<![\w.]){re.escape(name)}(?![\w])", message))
    ]
    return min(found)[1] if found else ""


def to_grpc_error(
    exc: BaseException, *, request_id: str, fields: Sequence[str] = (), sanitize: bool = False
) -> GrpcError:
    """`exc` as the status a client sees. `fields` are the request's field names (for the
    field violation); `sanitize` hides AWS's reasons from callers that hold only a sandbox
    token, exactly as the sandbox listener does."""
    if isinstance(exc, TimeoutError):
        return _error(grpc.StatusCode.DEADLINE_EXCEEDED, "the call's deadline passed")
    error = translate(exc) if isinstance(exc, Exception) else IssuerError("internal error")
    if isinstance(error, BadRequest):
        violation = error_details_pb2.BadRequest.FieldViolation(
            field=field_of(error.message, fields), description=error.message
        )
        detail = error_details_pb2.BadRequest(field_violations=[violation])
        return _error(grpc.StatusCode.INVALID_ARGUMENT, error.message, detail)
    if isinstance(error, CredentialsRejected):
        return _rejected(error, request_id, sanitize=sanitize)
    for kind, code in _BY_CLASS:
        if isinstance(error, kind):
            return _error(code, error.message)
    if error.status == 503:
        retry = error.retry_after if isinstance(error, CredentialsUnavailable) else 5
        message = (
            _unavailable_for_sandbox(request_id)
            if sanitize
            else f"{error.message} (request id {request_id})"
        )
        info = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=retry))
        return _error(grpc.StatusCode.UNAVAILABLE, message, info)
    shown = error.message if error is exc and not sanitize else "internal error"
    return _error(grpc.StatusCode.INTERNAL, f"{shown} (request id {request_id})")


def _rejected(error: CredentialsRejected, request_id: str, *, sanitize: bool) -> GrpcError:
    if sanitize:
        return _error(grpc.StatusCode.FAILED_PRECONDITION, _unavailable_for_sandbox(request_id))
    metadata = {"request_id": request_id}
    if error.sts_code:
        metadata["sts_code"] = error.sts_code
    if error.hint:
        metadata["hint"] = error.hint
    for name, value in error.details.items():
        metadata[name] = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    info = error_details_pb2.ErrorInfo(
        reason="CREDENTIALS_REJECTED", domain=DOMAIN, metadata=metadata
    )
    return _error(grpc.StatusCode.FAILED_PRECONDITION, error.message, info)


def _unavailable_for_sandbox(request_id: str) -> str:
    return (
        "credentials are unavailable for this sandbox right now; the operator can find the "
        f"cause under request id {request_id}"
    )


def _error(
    code: grpc.StatusCode,
    message: str,
    detail: error_details_pb2.BadRequest
    | error_details_pb2.RetryInfo
    | error_details_pb2.ErrorInfo
    | None = None,
) -> GrpcError:
    status = status_pb2.Status(code=_RPC_CODES[code], message=message)
    if detail is not None:
        packed = any_pb2.Any()
        packed.Pack(detail)
        status.details.append(packed)
    return GrpcError(code, message, status.SerializeToString())


_RPC_CODES = {
    grpc.StatusCode.INVALID_ARGUMENT: code_pb2.INVALID_ARGUMENT,
    grpc.StatusCode.UNAUTHENTICATED: code_pb2.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED: code_pb2.PERMISSION_DENIED,
    grpc.StatusCode.NOT_FOUND: code_pb2.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS: code_pb2.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION: code_pb2.FAILED_PRECONDITION,
    grpc.StatusCode.UNAVAILABLE: code_pb2.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED: code_pb2.DEADLINE_EXCEEDED,
    grpc.StatusCode.INTERNAL: code_pb2.INTERNAL,
}
