"""SigV4 parsing and verification against requests signed by botocore itself."""

from __future__ import annotations

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from broker.standin.query import IncomingRequest
from broker.standin.sigv4 import (
    access_key_id,
    parse_authorization,
    security_token,
    signature_matches,
)

BODY = b"Action=GetCallerIdentity&Version=2011-06-15"
SECRET = "s3cr3t"
SESSION_TOKEN = "tok"


def signed(query: str = "") -> IncomingRequest:
    request = AWSRequest(
        method="POST",
        url="http://127.0.0.1:4566/" + ("?" + query if query else ""),
        data=BODY,
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
    )
    SigV4Auth(Credentials("ASIAEXAMPLE", SECRET, SESSION_TOKEN), "sts", "us-east-1").add_auth(
        request
    )
    headers = [(k.lower(), str(v)) for k, v in request.headers.items()]
    return IncomingRequest("POST", "/", query, (("host", "127.0.0.1:4566"), *headers), BODY)


def test_botocore_signatures_verify() -> None:
    """A request botocore signed verifies with the same secret."""
    request = signed()
    auth = parse_authorization(request.header("authorization"))
    assert auth is not None
    assert (auth.access_key_id, auth.region, auth.service) == ("ASIAEXAMPLE", "us-east-1", "sts")
    assert signature_matches(request, auth, SECRET)


def test_query_strings_are_canonicalised() -> None:
    """Query parameters take part in the signature, in sorted and encoded form."""
    request = signed(query="b=2&a=x%20y")
    auth = parse_authorization(request.header("authorization"))
    assert auth is not None
    assert signature_matches(request, auth, SECRET)


def test_wrong_secret_or_tampered_body_fails() -> None:
    """Another secret, or a body changed after signing, does not verify."""
    request = signed()
    auth = parse_authorization(request.header("authorization"))
    assert auth is not None
    assert not signature_matches(request, auth, "other")
    tampered = IncomingRequest(
        request.method, request.raw_path, "", request.headers, BODY + b"&DurationSeconds=43200"
    )
    assert not signature_matches(tampered, auth, SECRET)


def test_missing_signed_header_fails() -> None:
    """A header listed in SignedHeaders but absent from the request fails verification."""
    request = signed()
    auth = parse_authorization(request.header("authorization"))
    assert auth is not None
    stripped = IncomingRequest(
        "POST",
        "/",
        "",
        tuple(h for h in request.headers if h[0] != "x-amz-security-token"),
        BODY,
    )
    assert not signature_matches(stripped, auth, SECRET)


def test_access_key_from_header_or_presigned_query() -> None:
    """The signer's key id comes from Authorization, else from X-Amz-Credential."""
    assert access_key_id(signed()) == "ASIAEXAMPLE"
    presigned = IncomingRequest(
        "GET",
        "/",
        "X-Amz-Credential=AKIDQUERY%2F20260101%2Fus-east-1%2Fsts%2Faws4_request",
        (),
        b"",
    )
    assert access_key_id(presigned) == "AKIDQUERY"
    with_token = IncomingRequest("GET", "/", "X-Amz-Security-Token=abc%2B1", (), b"")
    assert security_token(with_token) == "abc+1"
    assert security_token(signed()) == SESSION_TOKEN
    assert access_key_id(IncomingRequest("POST", "/", "", (), b"")) is None
    assert parse_authorization("Bearer abc") is None
