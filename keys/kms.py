"""KmsSigner: a Signer whose private key lives in AWS KMS and never leaves it.

    RS256 -> KeySpec RSA_2048,      SigningAlgorithm RSASSA_PKCS1_V1_5_SHA_256
    ES256 -> KeySpec ECC_NIST_P256, SigningAlgorithm ECDSA_SHA_256

KMS is sent the JWS signing input itself (`MessageType=RAW`, KMS hashes it; at most 4096
bytes, far above any token we mint). ECDSA signatures come back DER-encoded and are converted
to JOSE's raw r||s. The public JWK is built from GetPublicKey's DER SubjectPublicKeyInfo, with
kid = RFC 7638 thumbprint, exactly as for local keys.

KMS failures become KmsError (KmsUnavailable when retrying later may help) naming the call,
AWS's error code and what to do.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import load_der_public_key
from joserfc.jwk import ECKey, RSAKey

from keys.botocore_lazy import call_errors
from keys.errors import KeysError
from keys.jwk import JoseKey, public_jwk
from keys.model import Algorithm

if TYPE_CHECKING:
    from typing import Unpack

    from types_aiobotocore_kms.literals import KeySpecType, SigningAlgorithmSpecType
    from types_aiobotocore_kms.type_defs import (
        GetPublicKeyRequestTypeDef,
        GetPublicKeyResponseTypeDef,
        SignRequestTypeDef,
        SignResponseTypeDef,
    )

__all__ = [
    "KMS_SPECS",
    "MAX_RAW_MESSAGE",
    "KmsError",
    "KmsSigner",
    "KmsSigningApi",
    "KmsSpec",
    "KmsUnavailable",
    "ecdsa_der_to_raw",
    "kms_errors",
    "kms_public_jwk",
    "public_jwk_from_spki",
]

# KMS signs a RAW message of at most 4096 bytes; longer ones must be sent as a digest.
MAX_RAW_MESSAGE = 4096
# P-256 coordinates and ECDSA r, s are 32 bytes each.
P256_BYTES = 32
RSA_2048_BYTES = 256
# AWS error messages name ARNs and actions, never secrets; still, keep a log line readable.
_MAX_AWS_MESSAGE = 300


@dataclass(frozen=True, slots=True)
class KmsSpec:
    key_spec: KeySpecType
    signing_algorithm: SigningAlgorithmSpecType
    signature_bytes: int


KMS_SPECS: dict[Algorithm, KmsSpec] = {
    Algorithm.RS256: KmsSpec("RSA_2048", "RSASSA_PKCS1_V1_5_SHA_256", RSA_2048_BYTES),
    Algorithm.ES256: KmsSpec("ECC_NIST_P256", "ECDSA_SHA_256", 2 * P256_BYTES),
}


class KmsError(KeysError):
    """AWS KMS refused or failed a call. The message names the call, AWS's error code and what
    to do; it never holds key material (KMS never hands any out)."""

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class KmsUnavailable(KmsError):
    """KMS could not be reached, throttled us, or failed inside: retrying later may succeed."""


# Codes after which the same call may succeed later.
_TRANSIENT = frozenset(
    {
        "ThrottlingException",
        "KMSInternalException",
        "DependencyTimeoutException",
        "KeyUnavailableException",
        "ServiceUnavailableException",
        "InternalFailure",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)
_HINTS = {
    "AccessDeniedException": "grant Warrant's AWS identity kms:{op} on this key (see the "
    "README's KMS permissions)",
    "NotFoundException": "no such KMS key in this account and region; check "
    "WARRANT_KMS_REGION, and that the key was not deleted",
    "DisabledException": "the KMS key is disabled: Warrant disables keys it retired; rotate "
    "to a new key, or re-enable this one in KMS if it was disabled by mistake",
    "KMSInvalidStateException": "the KMS key is disabled or pending deletion; rotate to a new "
    "key, or cancel the deletion in KMS",
    "InvalidKeyUsageException": "the KMS key is not an asymmetric SIGN_VERIFY key",
    "UnrecognizedClientException": "AWS does not recognise the credentials; check the AWS "
    "credentials Warrant runs with",
    "InvalidSignatureException": "the AWS credentials are wrong; check the secret key",
    "ExpiredTokenException": "the AWS session credentials have expired",
    "LimitExceededException": "a KMS quota was reached (keys, aliases or requests per second)",
}


@contextlib.contextmanager
def kms_errors(operation: str, key: str | None = None) -> Iterator[None]:
    """Translate botocore's exceptions raised inside the block into KmsError/KmsUnavailable."""
    subject = f"KMS {operation}" + (f" on {key}" if key else "")
    try:
        yield
    except call_errors() as exc:
        raise _translate(exc, subject, operation) from exc


def _translate(exc: Exception, subject: str, operation: str) -> KmsError:
    from botocore.exceptions import (  # noqa: PLC0415 - see keys.botocore_lazy
        ClientError,
        ConnectionClosedError,
        ConnectTimeoutError,
        EndpointConnectionError,
        NoCredentialsError,
        ReadTimeoutError,
    )

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "Unknown"))
        aws_message = str(error.get("Message", "")).strip()[:_MAX_AWS_MESSAGE]
        hint = _HINTS.get(code, "").format(op=operation)
        parts = [f"{subject} failed: {code}"]
        if aws_message:
            parts.append(f"({aws_message})")
        text = " ".join(parts) + (f"; {hint}" if hint else "")
        kind = KmsUnavailable if code in _TRANSIENT else KmsError
        return kind(text, code=code)
    if isinstance(exc, NoCredentialsError):
        return KmsError(
            f"{subject} failed: no AWS credentials found (environment, shared config, web "
            "identity or instance role)"
        )
    if isinstance(
        exc,
        EndpointConnectionError | ConnectTimeoutError | ReadTimeoutError | ConnectionClosedError,
    ):
        return KmsUnavailable(
            f"{subject} failed: KMS did not answer ({type(exc).__name__}); check "
            "WARRANT_KMS_REGION/WARRANT_KMS_ENDPOINT and the network, then retry"
        )
    return KmsError(f"{subject} failed: {type(exc).__name__}")


class KmsSigningApi(Protocol):
    """The KMS calls a signer makes; an aiobotocore KMS client satisfies it."""

    async def sign(self, **kwargs: Unpack[SignRequestTypeDef]) -> SignResponseTypeDef: ...

    async def get_public_key(
        self, **kwargs: Unpack[GetPublicKeyRequestTypeDef]
    ) -> GetPublicKeyResponseTypeDef: ...


class KmsSigner:
    """Signs with one KMS key. Holds only its ARN, kid and algorithm; the client is passed in
    and shared (one HTTP connection pool for every key)."""

    __slots__ = ("_alg", "_client", "_key_id", "_kid", "_spec")

    def __init__(self, client: KmsSigningApi, *, key_id: str, kid: str, alg: Algorithm) -> None:
        self._client = client
        self._key_id = key_id
        self._kid = kid
        self._alg = alg
        self._spec = KMS_SPECS[alg]

    @classmethod
    async def connect(cls, client: KmsSigningApi, key_id: str, alg: Algorithm) -> KmsSigner:
        """A signer for an existing KMS key, its kid read from KMS (GetPublicKey)."""
        jwk = await kms_public_jwk(client, key_id, alg)
        return cls(client, key_id=key_id, kid=jwk["kid"], alg=alg)

    @property
    def kid(self) -> str:
        return self._kid

    @property
    def alg(self) -> Algorithm:
        return self._alg

    @property
    def key_id(self) -> str:
        return self._key_id

    async def sign(self, signing_input: bytes) -> bytes:
        """The raw JWS signature (ES256: r||s, 64 bytes). Raises KmsError/KmsUnavailable."""
        if len(signing_input) > MAX_RAW_MESSAGE:
            raise KmsError(
                f"a JWS signing input of {len(signing_input)} bytes is longer than the "
                f"{MAX_RAW_MESSAGE} bytes KMS signs as a raw message"
            )
        with kms_errors("Sign", self._key_id):
            response = await self._client.sign(
                KeyId=self._key_id,
                Message=signing_input,
                MessageType="RAW",
                SigningAlgorithm=self._spec.signing_algorithm,
            )
        signature = response["Signature"]
        if self._alg is Algorithm.ES256:
            signature = ecdsa_der_to_raw(signature)
        if len(signature) != self._spec.signature_bytes:
            raise KmsError(
                f"KMS Sign on {self._key_id} returned a {len(signature)}-byte signature; "
                f"{self._alg.value} needs {self._spec.signature_bytes} (is it a "
                f"{self._spec.key_spec} key?)"
            )
        return signature

    def __repr__(self) -> str:
        return f"KmsSigner(kid={self._kid!r}, alg={self._alg.value!r}, key_id={self._key_id!r})"


async def kms_public_jwk(client: KmsSigningApi, key_id: str, alg: Algorithm) -> dict[str, str]:
    """The published JWK of a KMS key, after checking it is a SIGN_VERIFY key for `alg`."""
    spec = KMS_SPECS[alg]
    with kms_errors("GetPublicKey", key_id):
        response = await client.get_public_key(KeyId=key_id)
    # Read as untrusted data: moto answers only the deprecated CustomerMasterKeySpec.
    fields: Mapping[str, object] = response
    key_spec = fields.get("KeySpec") or fields.get("CustomerMasterKeySpec")
    usage = fields.get("KeyUsage")
    if usage != "SIGN_VERIFY" or key_spec != spec.key_spec:
        raise KmsError(
            f"KMS key {key_id} is a {key_spec} {usage} key; {alg.value} needs a "
            f"{spec.key_spec} SIGN_VERIFY key"
        )
    algorithms = fields.get("SigningAlgorithms")
    if not isinstance(algorithms, list) or spec.signing_algorithm not in algorithms:
        raise KmsError(f"KMS key {key_id} does not offer {spec.signing_algorithm}")
    return public_jwk_from_spki(response["PublicKey"], alg)


def public_jwk_from_spki(der: bytes, alg: Algorithm) -> dict[str, str]:
    """DER SubjectPublicKeyInfo -> the published JWK (kid = RFC 7638 thumbprint)."""
    try:
        key = load_der_public_key(der)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise KmsError("KMS returned a public key that is not DER SubjectPublicKeyInfo") from exc
    jose: JoseKey
    if alg is Algorithm.RS256:
        if not isinstance(key, RSAPublicKey) or key.key_size != RSA_2048_BYTES * 8:
            raise KmsError("RS256 needs an RSA-2048 KMS key")
        jose = RSAKey.import_key(der)
    else:
        if not isinstance(key, EllipticCurvePublicKey) or not isinstance(key.curve, SECP256R1):
            raise KmsError("ES256 needs a P-256 (ECC_NIST_P256) KMS key")
        jose = ECKey.import_key(der)
    return public_jwk(jose, alg)


def ecdsa_der_to_raw(der: bytes, size: int = P256_BYTES) -> bytes:
    """An ECDSA signature from DER (what KMS returns) to JOSE's fixed-size r||s."""
    try:
        r, s = decode_dss_signature(der)
    except ValueError as exc:
        raise KmsError("KMS returned an ECDSA signature that is not DER") from exc
    limit = 1 << (8 * size)
    if not (0 < r < limit and 0 < s < limit):
        raise KmsError("KMS returned an ECDSA signature too large for the curve")
    return r.to_bytes(size, "big") + s.to_bytes(size, "big")
