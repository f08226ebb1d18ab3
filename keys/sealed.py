"""Private keys sealed under a key-encryption key (KEK): AES-256-GCM, the kid as associated data.

    blob = version (1 byte, 0x01) || nonce (12 random bytes) || ciphertext || tag (16 bytes)

The plaintext is the PKCS#8 PEM of the private key. Binding the kid as associated data means a
blob moved to another record's row fails to open, as does any altered byte. Each blob also
records the id of the KEK that sealed it (an HMAC of a fixed label under the KEK, not the KEK),
so a wrong KEK is told apart from a damaged row.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from keys.custody import Custody, HeldKey, PrivateHalf, SealedHalf
from keys.errors import KeysError
from keys.jwk import generate_key, private_pem, public_jwk
from keys.model import Algorithm, KeyRecord
from keys.protocols import Signer
from keys.signer import LocalSigner

__all__ = ["KEK_BYTES", "KeyEncryptionKey", "SealedCustodian"]

KEK_BYTES = 32  # AES-256
SEAL_VERSION = b"\x01"
NONCE_BYTES = 12  # GCM's standard nonce; random nonces are safe far beyond our key counts
_ID_LABEL = b"warrant key-encryption key id v1"
KEK_VARIABLE = "WARRANT_KEY_ENCRYPTION_KEY"


class KeyEncryptionKey:
    """The KEK. Its repr and every error show only its id, never the key."""

    __slots__ = ("_aead", "_id")

    def __init__(self, key: bytes) -> None:
        if len(key) != KEK_BYTES:
            raise KeysError(f"a key-encryption key must be {KEK_BYTES} bytes, not {len(key)}")
        self._aead = AESGCM(key)
        self._id = hmac.new(key, _ID_LABEL, hashlib.sha256).hexdigest()[:16]

    @classmethod
    def from_base64(cls, text: str) -> KeyEncryptionKey:
        """Parse standard base64 of 32 bytes; the error never repeats the text."""
        try:
            key = base64.b64decode(text.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise KeysError(f"{KEK_VARIABLE} is not valid base64") from None
        return cls(key)

    @property
    def id(self) -> str:
        """A public identifier of this KEK (16 hex chars), stored with every blob it seals."""
        return self._id

    def seal(self, kid: str, plaintext: bytes) -> SealedHalf:
        nonce = os.urandom(NONCE_BYTES)
        ciphertext = self._aead.encrypt(nonce, plaintext, kid.encode())
        return SealedHalf(blob=SEAL_VERSION + nonce + ciphertext, kek_id=self._id)

    def open(self, kid: str, half: SealedHalf) -> bytes:
        """The plaintext, or KeysError saying whether the KEK is wrong or the blob damaged."""
        if half.kek_id != self._id:
            raise KeysError(
                f"the private key of {kid} was sealed with key-encryption key id {half.kek_id}, "
                f"but {KEK_VARIABLE} has id {self._id}: set {KEK_VARIABLE} to the key it was "
                "sealed with"
            )
        blob = half.blob
        if blob[:1] != SEAL_VERSION or len(blob) < 1 + NONCE_BYTES + 16:
            raise KeysError(
                f"the sealed private key of {kid} is not in a format this Warrant reads "
                "(the row was altered or damaged)"
            )
        nonce, ciphertext = blob[1 : 1 + NONCE_BYTES], blob[1 + NONCE_BYTES :]
        try:
            return self._aead.decrypt(nonce, ciphertext, kid.encode())
        except InvalidTag:
            raise KeysError(
                f"the sealed private key of {kid} fails its integrity check under "
                f"{KEK_VARIABLE} (id {self._id}): the row was altered, damaged, or moved from "
                "another kid; restore it from a backup"
            ) from None

    def __repr__(self) -> str:
        return f"KeyEncryptionKey(id={self._id!r})"


class SealedCustodian:
    """Custodian for keys kept encrypted in the database. Keys are generated in this process
    (RSA generation takes ~100 ms, so in a worker thread), sealed at once, and decrypted only
    to build a signer."""

    def __init__(self, kek: KeyEncryptionKey) -> None:
        self._kek = kek

    @property
    def custody(self) -> Custody:
        return Custody.DATABASE

    async def create(self, alg: Algorithm) -> HeldKey:
        key = await asyncio.to_thread(generate_key, alg)
        jwk = public_jwk(key, alg)
        return HeldKey(alg=alg, public_jwk=jwk, half=self._kek.seal(jwk["kid"], private_pem(key)))

    def signer(self, record: KeyRecord, half: PrivateHalf) -> Signer:
        if not isinstance(half, SealedHalf):
            raise KeysError(f"key {record.kid} is not sealed in the database")
        pem = self._kek.open(record.kid, half)
        try:
            signer = LocalSigner.from_pem(pem, record.alg)
        except KeysError as exc:
            raise KeysError(f"the sealed private key of {record.kid}: {exc}") from None
        if signer.kid != record.kid:
            raise KeysError(f"the sealed private key of {record.kid} is a different key")
        return signer

    async def retire(self, kid: str, half: PrivateHalf) -> None:
        """Nothing to do: the store drops the sealed blob with the state change."""

    async def destroy(self, kid: str, half: PrivateHalf) -> None:
        """Nothing to do: the blob goes with the record."""

    async def aclose(self) -> None:
        """Holds no clients."""

    def __repr__(self) -> str:
        return f"SealedCustodian({self._kek!r})"
