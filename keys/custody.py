"""Custody of private keys for stores that keep their records elsewhere (a database).

A record store decides *what* happens to keys (the plan); a custodian holds the private halves:

    SealedCustodian (keys/sealed.py)   the private key, AES-256-GCM-encrypted under a
                                       key-encryption key, stored next to its record
    KmsCustodian (keys/kms_custody.py) an AWS KMS asymmetric key; the private half never
                                       leaves KMS, the record keeps only the key's ARN

What a record keeps of its private half is a `PrivateHalf`: a `SealedHalf` holds key material
(encrypted) and is dropped the moment the key can never sign again; a `KmsHalf` is only a
reference, kept until the record is removed so the KMS key can be disabled and then deleted.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Protocol, runtime_checkable

from keys.model import Algorithm, KeyRecord
from keys.protocols import Signer

__all__ = [
    "Closeable",
    "Custodian",
    "Custody",
    "HeldKey",
    "KmsHalf",
    "PrivateHalf",
    "SealedHalf",
    "custody_of",
]


class Custody(enum.StrEnum):
    DATABASE = "database"  # encrypted under the key-encryption key, in the key table
    KMS = "kms"  # an AWS KMS key; the private half never leaves KMS


@dataclass(frozen=True, slots=True)
class SealedHalf:
    """A private key encrypted (AES-256-GCM) under the key-encryption key `kek_id` names."""

    holds_key_material: ClassVar[bool] = True
    blob: bytes = field(repr=False)
    kek_id: str


@dataclass(frozen=True, slots=True)
class KmsHalf:
    """A reference to the AWS KMS key that holds the private half: its ARN."""

    holds_key_material: ClassVar[bool] = False
    key_id: str


PrivateHalf = SealedHalf | KmsHalf


def custody_of(half: PrivateHalf) -> Custody:
    return Custody.DATABASE if isinstance(half, SealedHalf) else Custody.KMS


@dataclass(frozen=True, slots=True)
class HeldKey:
    """A key a custodian has just created: its published form (kid = thumbprint) and the half
    the record keeps."""

    alg: Algorithm
    public_jwk: Mapping[str, str] = field(repr=False)
    half: PrivateHalf

    @property
    def kid(self) -> str:
        return self.public_jwk["kid"]


class Custodian(Protocol):
    """Creates private keys, signs with them, and lets them go. Errors are KeysError with a
    message safe to show an operator; no method ever returns or logs key material."""

    @property
    def custody(self) -> Custody: ...

    async def create(self, alg: Algorithm) -> HeldKey:
        """A brand-new key for `alg`. Raises KeysError if it cannot be created."""
        ...

    def signer(self, record: KeyRecord, half: PrivateHalf) -> Signer:
        """A signer for `record`'s key. Raises KeysError when `half` cannot be used (another
        custodian's, unreadable, or not the key the record's kid names)."""
        ...

    async def retire(self, kid: str, half: PrivateHalf) -> None:
        """`kid` will never sign again (it was retired or revoked, and that is committed).
        Best effort: the caller logs a failure and carries on."""
        ...

    async def destroy(self, kid: str, half: PrivateHalf) -> None:
        """The record of `kid` is about to be removed (or was never committed): let the private
        half go for good. Raises KeysError if that failed, so the record is kept and the removal
        retried later."""
        ...

    async def aclose(self) -> None:
        """Release clients; the custodian is not used afterwards."""
        ...


@runtime_checkable
class Closeable(Protocol):
    """Something holding clients or connections that must be released (a KeyStore may be)."""

    async def aclose(self) -> None: ...
