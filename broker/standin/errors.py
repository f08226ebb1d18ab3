"""AWS-shaped errors, rendered as the STS query-protocol XML that botocore parses into ClientError.

    StsError(code, message, status, type)     one class; the constructors below name AWS's codes
     ├── 400 Sender   ValidationError, InvalidParameterValue, InvalidIdentityToken,
     │                ExpiredTokenException, IDPCommunicationError, Throttling, ExpiredToken
     ├── 403 Sender   AccessDenied, InvalidClientTokenId, SignatureDoesNotMatch,
     │                MissingAuthenticationToken
     └── 503 Receiver ServiceUnavailable

Messages copy AWS's wording where it is known (aws-facts.md §1.5); they never contain a token.
"""

from __future__ import annotations

from xml.sax.saxutils import escape

__all__ = [
    "STS_NAMESPACE",
    "StsError",
    "access_denied",
    "error_xml",
    "expired_token",
    "expired_web_identity_token",
    "idp_communication_error",
    "invalid_client_token_id",
    "invalid_identity_token",
    "invalid_parameter_value",
    "missing_authentication_token",
    "service_unavailable",
    "signature_does_not_match",
    "throttling",
    "validation_error",
]

STS_NAMESPACE = "https://sts.amazonaws.com/doc/2011-06-15/"

# Verbatim, double space included: raw STS responses quoted in public issues carry it.
VERIFICATION_KEY_UNAVAILABLE = (
    "Couldn't retrieve verification key from your identity provider,  please reference "
    "AssumeRoleWithWebIdentity documentation for requirements"
)


class StsError(Exception):
    """An error the gate answers with instead of forwarding to moto."""

    def __init__(self, code: str, message: str, *, status: int = 400, sender: bool = True) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status
        self.type = "Sender" if sender else "Receiver"


def error_xml(error: StsError, request_id: str) -> bytes:
    return (
        f'<ErrorResponse xmlns="{STS_NAMESPACE}">'
        f"<Error><Type>{error.type}</Type><Code>{escape(error.code)}</Code>"
        f"<Message>{escape(error.message)}</Message></Error>"
        f"<RequestId>{escape(request_id)}</RequestId></ErrorResponse>"
    ).encode()


def validation_error(message: str) -> StsError:
    return StsError("ValidationError", message)


def invalid_parameter_value(message: str) -> StsError:
    return StsError("InvalidParameterValue", message)


def invalid_identity_token(message: str = VERIFICATION_KEY_UNAVAILABLE) -> StsError:
    return StsError("InvalidIdentityToken", message)


def expired_web_identity_token(now: int, exp: int) -> StsError:
    return StsError(
        "ExpiredTokenException",
        f"Token expired: current date/time {now} must be before the expiration date/time {exp}",
    )


def idp_communication_error() -> StsError:
    return StsError(
        "IDPCommunicationError",
        "The request could not be fulfilled because the identity provider (IDP) that was asked "
        "to verify the incoming identity token could not be reached. This is often a transient "
        "error caused by network conditions. Retry the request a limited number of times and "
        "wait between retries to avoid overloading the IDP.",
    )


def access_denied(message: str) -> StsError:
    return StsError("AccessDenied", message, status=403)


def invalid_client_token_id() -> StsError:
    return StsError(
        "InvalidClientTokenId", "The security token included in the request is invalid.", status=403
    )


def expired_token() -> StsError:
    return StsError("ExpiredToken", "The security token included in the request is expired")


def signature_does_not_match() -> StsError:
    return StsError(
        "SignatureDoesNotMatch",
        "The request signature we calculated does not match the signature you provided. Check "
        "your AWS Secret Access Key and signing method. Consult the service documentation for "
        "details.",
        status=403,
    )


def missing_authentication_token() -> StsError:
    return StsError(
        "MissingAuthenticationToken", "Request is missing Authentication Token", status=403
    )


def region_disabled() -> StsError:
    return StsError(
        "RegionDisabledException",
        "STS is not activated in this region for account. Your account administrator can "
        "activate STS in this region using the IAM Console.",
        status=403,
    )


def throttling() -> StsError:
    return StsError("Throttling", "Rate exceeded")


def service_unavailable() -> StsError:
    return StsError(
        "ServiceUnavailable",
        "Service is unable to handle request.",
        status=503,
        sender=False,
    )
