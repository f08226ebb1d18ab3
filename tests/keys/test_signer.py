"""LocalSigner, checked against an independent JOSE library (pyjwt)."""

from __future__ import annotations

import base64
import json

import jwt
import pytest

from keys.errors import KeysError
from keys.jwk import generate_key, import_jwk, private_pem, public_jwk
from keys.model import Algorithm
from keys.protocols import Signer
from keys.signer import LocalSigner


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


async def _compact_jws(signer: Signer, claims: dict[str, object]) -> str:
    header = {"alg": signer.alg.value, "kid": signer.kid, "typ": "JWT"}
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = await signer.sign(signing_input.encode())
    return f"{signing_input}.{_b64(signature)}"


@pytest.mark.parametrize("alg", list(Algorithm))
async def test_signature_verifies_with_pyjwt(alg: Algorithm) -> None:
    """A token signed by LocalSigner verifies with pyjwt against the published public JWK."""
    key = generate_key(alg)
    signer = LocalSigner(key, alg)
    token = await _compact_jws(signer, {"sub": "agent-1"})
    verifier = jwt.PyJWK(public_jwk(key, alg))
    claims = jwt.decode(token, key=verifier.key, algorithms=[alg.value])
    assert claims == {"sub": "agent-1"}
    assert jwt.get_unverified_header(token)["kid"] == signer.kid == key.thumbprint()


async def test_tampered_token_fails_pyjwt_verification() -> None:
    """pyjwt rejects a LocalSigner token whose payload was changed after signing."""
    key = generate_key(Algorithm.ES256)
    token = await _compact_jws(LocalSigner(key, Algorithm.ES256), {"sub": "agent-1"})
    header, _, signature = token.split(".")
    forged = f"{header}.{_b64(json.dumps({'sub': 'root'}).encode())}.{signature}"
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(
            forged, key=jwt.PyJWK(public_jwk(key, Algorithm.ES256)).key, algorithms=["ES256"]
        )


async def test_es256_signature_is_raw_r_s() -> None:
    """ES256 signatures are 64 raw bytes (r||s), which pyjwt's algorithm verifies as such."""
    key = generate_key(Algorithm.ES256)
    signature = await LocalSigner(key, Algorithm.ES256).sign(b"header.payload")
    assert len(signature) == 64
    algorithm = jwt.algorithms.ECAlgorithm(jwt.algorithms.ECAlgorithm.SHA256)
    public = algorithm.from_jwk(json.dumps(public_jwk(key, Algorithm.ES256)))
    assert algorithm.verify(b"header.payload", public, signature)


def test_from_pem_signs_with_the_same_key() -> None:
    """A signer parsed from the PKCS#8 PEM has the kid of the key that wrote it."""
    key = generate_key(Algorithm.RS256)
    pem = private_pem(key)
    assert pem.startswith(b"-----BEGIN " + b"PRIVATE KEY-----")
    assert LocalSigner.from_pem(pem, Algorithm.RS256).kid == key.thumbprint()


@pytest.mark.parametrize("alg", list(Algorithm))
def test_repr_shows_kid_and_alg_only(alg: Algorithm) -> None:
    """The repr names the kid and algorithm and holds no private key material."""
    key = generate_key(alg)
    text = repr(LocalSigner(key, alg))
    assert text == f"LocalSigner(kid={key.thumbprint()!r}, alg={alg.value!r})"
    private = key.as_dict(private=True)
    for member in ("d", "p", "q"):
        value = private.get(member)
        if isinstance(value, str):
            assert value not in text


def test_refuses_public_key_and_wrong_algorithm() -> None:
    """A signer needs a private key of the kind its algorithm uses."""
    key = generate_key(Algorithm.ES256)
    public_only = import_jwk(public_jwk(key, Algorithm.ES256))
    with pytest.raises(KeysError, match="private key"):
        LocalSigner(public_only, Algorithm.ES256)
    with pytest.raises(KeysError, match="RS256"):
        LocalSigner(key, Algorithm.RS256)


def test_from_pem_error_does_not_echo_the_pem() -> None:
    """An unreadable PEM raises KeysError whose message does not quote the file's bytes."""
    garbage = (
        b"-----BEGIN " + b"PRIVATE KEY-----\nU0VDUkVUU0VDUkVU\n-----END " + b"PRIVATE KEY-----\n"
    )
    with pytest.raises(KeysError) as caught:
        LocalSigner.from_pem(garbage, Algorithm.ES256)
    assert "U0VDUkVU" not in str(caught.value)


def test_local_signer_satisfies_signer_protocol() -> None:
    """LocalSigner is a Signer, statically and at run time."""
    signer: Signer = LocalSigner(generate_key(Algorithm.ES256), Algorithm.ES256)
    assert isinstance(signer, Signer)
