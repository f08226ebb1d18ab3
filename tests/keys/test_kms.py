"""KmsSigner and KmsCustodian against moto's KMS server over real HTTP; tokens verified by PyJWT."""

from __future__ import annotations

import base64
import hashlib
import json
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import jwt
import pytest
from aiobotocore.session import AioSession
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from keys.custody import KmsHalf, SealedHalf
from keys.errors import KeysError
from keys.jwk import PUBLIC_MEMBERS
from keys.kms import (
    MAX_RAW_MESSAGE,
    KmsError,
    KmsSigner,
    KmsUnavailable,
    ecdsa_der_to_raw,
    public_jwk_from_spki,
)
from keys.kms_custody import ALIAS_PREFIX, DELETION_WINDOW_DAYS, KmsConnection, KmsCustodian
from keys.model import Algorithm, KeyRecord, KeyState

if TYPE_CHECKING:
    from types_aiobotocore_kms import KMSClient

REGION = "us-east-1"
NOW = datetime(2026, 1, 1, tzinfo=UTC)
SPECS = {Algorithm.RS256: "RSA_2048", Algorithm.ES256: "ECC_NIST_P256"}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def rfc7638(jwk: dict[str, str]) -> str:
    """The RFC 7638 thumbprint computed here, independently of the code under test."""
    required = ("e", "kty", "n") if jwk["kty"] == "RSA" else ("crv", "kty", "x", "y")
    canonical = json.dumps({k: jwk[k] for k in required}, separators=(",", ":"), sort_keys=True)
    return b64url(hashlib.sha256(canonical.encode()).digest())


@pytest.fixture
def session() -> AioSession:
    """Static test credentials on the session itself: no environment variable is touched."""
    session = AioSession()
    session.set_credentials("AKIAKMSTEST000000000", "kms-test-secret")
    return session


@pytest.fixture
async def kms(moto_url: str, session: AioSession) -> AsyncIterator[KMSClient]:
    async with session.create_client("kms", region_name=REGION, endpoint_url=moto_url) as client:
        yield client


@pytest.fixture
async def connection(moto_url: str, session: AioSession) -> AsyncIterator[KmsConnection]:
    connection = KmsConnection(region=REGION, endpoint_url=moto_url, session=session)
    yield connection
    await connection.aclose()


async def new_key(kms: KMSClient, alg: Algorithm) -> str:
    created = await kms.create_key(KeyUsage="SIGN_VERIFY", KeySpec=SPECS[alg])  # type: ignore[arg-type]
    return created["KeyMetadata"]["Arn"]


async def mint(signer: KmsSigner, claims: dict[str, Any]) -> str:
    header = b64url(json.dumps({"alg": signer.alg.value, "kid": signer.kid, "typ": "JWT"}).encode())
    payload = b64url(json.dumps(claims).encode())
    signature = await signer.sign(f"{header}.{payload}".encode())
    return f"{header}.{payload}.{b64url(signature)}"


@pytest.mark.parametrize("alg", list(Algorithm))
async def test_tokens_signed_in_kms_verify_with_pyjwt(kms: KMSClient, alg: Algorithm) -> None:
    """A token KmsSigner signs (RS256 and ES256) verifies with PyJWT against the JWK built from
    GetPublicKey, whose kid is the RFC 7638 thumbprint and which has only public members."""
    key_id = await new_key(kms, alg)
    signer = await KmsSigner.connect(kms, key_id, alg)
    jwk = dict((await kms_jwk(kms, key_id, alg)).items())
    assert signer.kid == jwk["kid"] == rfc7638(jwk)
    assert set(jwk) <= set(PUBLIC_MEMBERS)
    assert (jwk["alg"], jwk["use"]) == (alg.value, "sig")
    token = await mint(signer, {"sub": "tenant:acme", "aud": "acme-oidc-service"})
    claims = jwt.decode(token, jwt.PyJWK(jwk), algorithms=[alg.value], audience="acme-oidc-service")
    assert claims["sub"] == "tenant:acme"
    assert jwt.get_unverified_header(token)["kid"] == signer.kid


async def kms_jwk(kms: KMSClient, key_id: str, alg: Algorithm) -> dict[str, str]:
    response = await kms.get_public_key(KeyId=key_id)
    return public_jwk_from_spki(response["PublicKey"], alg)


async def test_es256_signatures_are_raw_r_s(kms: KMSClient) -> None:
    """KMS answers ECDSA in DER; the signer hands JOSE 64 bytes of r||s, which are a valid
    P-256 signature of the signing input."""
    key_id = await new_key(kms, Algorithm.ES256)
    signer = await KmsSigner.connect(kms, key_id, Algorithm.ES256)
    message = b"header.payload"
    signature = await signer.sign(message)
    assert len(signature) == 64
    jwk = await kms_jwk(kms, key_id, Algorithm.ES256)
    public = ec.EllipticCurvePublicNumbers(
        int.from_bytes(unb64url(jwk["x"]), "big"),
        int.from_bytes(unb64url(jwk["y"]), "big"),
        ec.SECP256R1(),
    ).public_key()
    r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    public.verify(encode_dss_signature(r, s), message, ec.ECDSA(hashes.SHA256()))


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_der_to_raw_pads_short_integers_and_refuses_garbage() -> None:
    """Small r and s are left-padded to 32 bytes each; bytes that are not DER are a KmsError."""
    assert ecdsa_der_to_raw(encode_dss_signature(1, 2)) == (1).to_bytes(32, "big") + (2).to_bytes(
        32, "big"
    )
    key = ec.generate_private_key(ec.SECP256R1())
    der = key.sign(b"m", ec.ECDSA(hashes.SHA256()))
    raw = ecdsa_der_to_raw(der)
    assert (int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")) == (
        decode_dss_signature(der)
    )
    with pytest.raises(KmsError, match="not DER"):
        ecdsa_der_to_raw(b"\x00" * 64)
    with pytest.raises(KmsError, match="too large"):
        ecdsa_der_to_raw(encode_dss_signature(1 << 256, 1))


@pytest.mark.parametrize(
    ("alg", "usage", "spec"),
    [
        (Algorithm.RS256, "SIGN_VERIFY", "RSA_3072"),
        (Algorithm.ES256, "SIGN_VERIFY", "ECC_NIST_P384"),
        (Algorithm.RS256, "ENCRYPT_DECRYPT", "RSA_2048"),
    ],
)
async def test_a_key_of_the_wrong_kind_is_refused(
    kms: KMSClient, alg: Algorithm, usage: str, spec: str
) -> None:
    """A KMS key that is not a SIGN_VERIFY key of the algorithm's spec cannot become a signer,
    and the error names what was found and what is needed."""
    created = await kms.create_key(KeyUsage=usage, KeySpec=spec)  # type: ignore[arg-type]
    with pytest.raises(KmsError, match=f"is a {spec} {usage} key; {alg.value} needs"):
        await KmsSigner.connect(kms, created["KeyMetadata"]["Arn"], alg)


async def test_an_unknown_key_is_a_clear_error(connection: KmsConnection) -> None:
    """Signing with a key KMS does not know names the call, the AWS code and the region
    setting to check; it is not reported as retryable."""
    missing = f"arn:aws:kms:{REGION}:123456789012:key/00000000-0000-0000-0000-000000000000"
    signer = KmsSigner(connection, key_id=missing, kid="kid", alg=Algorithm.RS256)
    with pytest.raises(KmsError) as caught:
        await signer.sign(b"a.b")
    assert not isinstance(caught.value, KmsUnavailable)
    assert caught.value.code == "NotFoundException"
    assert f"KMS Sign on {missing} failed: NotFoundException" in str(caught.value)
    assert "WARRANT_KMS_REGION" in str(caught.value)


async def test_an_unreachable_kms_is_unavailable(session: AioSession) -> None:
    """A KMS endpoint nobody listens on gives KmsUnavailable (retry later), not a traceback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    connection = KmsConnection(region=REGION, endpoint_url=dead, session=session)
    try:
        signer = KmsSigner(connection, key_id="alias/none", kid="kid", alg=Algorithm.RS256)
        with pytest.raises(KmsUnavailable, match="KMS did not answer"):
            await signer.sign(b"a.b")
    finally:
        await connection.aclose()


async def test_an_oversized_signing_input_is_refused_before_calling_kms(
    connection: KmsConnection,
) -> None:
    """KMS signs at most 4096 raw bytes; longer input is refused up front with the limit."""
    signer = KmsSigner(connection, key_id="alias/none", kid="kid", alg=Algorithm.ES256)
    with pytest.raises(KmsError, match=f"longer than the {MAX_RAW_MESSAGE} bytes"):
        await signer.sign(b"x" * (MAX_RAW_MESSAGE + 1))


@pytest.mark.parametrize("alg", list(Algorithm))
async def test_custodian_key_lifecycle_in_kms(
    connection: KmsConnection, kms: KMSClient, alg: Algorithm
) -> None:
    """The custodian creates a SIGN_VERIFY key of the right spec, tagged as Warrant's and
    aliased by kid; its signer's tokens verify; retiring disables it; destroying schedules
    its deletion with the 7-day minimum, and destroying again is harmless."""
    custodian = KmsCustodian(connection, tags={"warrant:issuer": "https://issuer.example.test"})
    held = await custodian.create(alg)
    assert isinstance(held.half, KmsHalf)
    key_id = held.half.key_id
    metadata = (await kms.describe_key(KeyId=key_id))["KeyMetadata"]
    assert (metadata["KeyUsage"], metadata["KeySpec"]) == ("SIGN_VERIFY", SPECS[alg])
    assert "Warrant" in metadata["Description"]
    tags = {
        t["TagKey"]: t["TagValue"] for t in (await kms.list_resource_tags(KeyId=key_id))["Tags"]
    }
    assert tags == {
        "warrant:managed-by": "warrant",
        "warrant:kid": held.kid,
        "warrant:issuer": "https://issuer.example.test",
    }
    aliases = (await kms.list_aliases(KeyId=key_id))["Aliases"]
    assert [a["AliasName"] for a in aliases] == [ALIAS_PREFIX + held.kid]
    assert held.kid == rfc7638(dict(held.public_jwk))

    record = KeyRecord(
        kid=held.kid,
        alg=alg,
        state=KeyState.ACTIVE,
        created_at=metadata["CreationDate"],
        public_jwk=held.public_jwk,
    )
    signer = custodian.signer(record, held.half)
    assert isinstance(signer, KmsSigner)
    token = await mint(signer, {"sub": "s"})
    assert jwt.decode(token, jwt.PyJWK(dict(held.public_jwk)), algorithms=[alg.value])["sub"] == "s"

    await custodian.retire(held.kid, held.half)
    assert (await kms.describe_key(KeyId=key_id))["KeyMetadata"]["KeyState"] == "Disabled"
    await custodian.destroy(held.kid, held.half)
    metadata = (await kms.describe_key(KeyId=key_id))["KeyMetadata"]
    assert metadata["KeyState"] == "PendingDeletion"
    window = metadata["DeletionDate"] - metadata["CreationDate"]
    assert abs(window.total_seconds() - DELETION_WINDOW_DAYS * 86400) < 3600
    await custodian.destroy(held.kid, held.half)


async def test_custodian_refuses_another_custodys_half(connection: KmsConnection) -> None:
    """A sealed (database) private half is not something the KMS custodian can sign with."""
    custodian = KmsCustodian(connection)
    record = KeyRecord(
        kid="k", alg=Algorithm.ES256, state=KeyState.ACTIVE, created_at=NOW, public_jwk={}
    )
    with pytest.raises(KeysError, match="not held in KMS"):
        custodian.signer(record, SealedHalf(blob=b"x", kek_id="0" * 16))


def test_signer_repr_shows_no_more_than_ids(connection: KmsConnection) -> None:
    """A KmsSigner's repr names the kid, algorithm and KMS key; a connection's, its region."""
    signer = KmsSigner(connection, key_id="arn:k", kid="kid1", alg=Algorithm.RS256)
    assert repr(signer) == "KmsSigner(kid='kid1', alg='RS256', key_id='arn:k')"
    assert "kms-test-secret" not in repr(connection)
