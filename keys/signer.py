"""LocalSigner: a Signer over a private key held in this process."""

from __future__ import annotations

from joserfc.jws import JWSRegistry

from keys.errors import KeysError
from keys.jwk import JoseKey, check_key_matches_alg, import_pem
from keys.model import Algorithm

__all__ = ["LocalSigner"]


class LocalSigner:
    """Signs with one already-parsed private key. Parse once: loading a PEM costs ~35 ms."""

    __slots__ = ("_alg", "_algorithm", "_key", "_kid")

    def __init__(self, key: JoseKey, alg: Algorithm) -> None:
        if not key.is_private:
            raise KeysError("a signer needs a private key")
        check_key_matches_alg(key, alg)
        self._key = key
        self._alg = alg
        self._kid = key.thumbprint()
        self._algorithm = JWSRegistry.algorithms[alg.value]

    @classmethod
    def from_pem(cls, pem: bytes, alg: Algorithm) -> LocalSigner:
        """Parse a PKCS#8 PEM private key once and sign with it from then on."""
        return cls(import_pem(pem, alg), alg)

    @property
    def kid(self) -> str:
        return self._kid

    @property
    def alg(self) -> Algorithm:
        return self._alg

    async def sign(self, signing_input: bytes) -> bytes:
        """Raw JWS signature; for ES256, joserfc already returns r||s (64 bytes), not DER."""
        # Signing takes about a millisecond (RSA-2048) or less (P-256): cheaper in-line than
        # the hop to a worker thread.
        return self._algorithm.sign(signing_input, self._key)

    def __repr__(self) -> str:
        return f"LocalSigner(kid={self._kid!r}, alg={self._alg.value!r})"
