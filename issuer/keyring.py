"""The issuer's live view of the key store: the published documents and the one key that signs.

Both come from the same snapshot, so the key that signs is always in the JWKS we serve; and the
lifecycle guarantees it was published `publish_ahead` before it could become active.
"""

from __future__ import annotations

import logging

from issuer.discovery import discovery_document
from issuer.documents import StaticDocument
from issuer.errors import Unavailable
from keys.jwk import jwks_document
from keys.protocols import KeySnapshot, KeyStore, Signer

log = logging.getLogger(__name__)


class _Published:
    __slots__ = ("discovery", "jwks", "signer", "snapshot")

    def __init__(self, snapshot: KeySnapshot, issuer_url: str, max_age: int) -> None:
        published = snapshot.published()
        self.snapshot = snapshot
        self.jwks = StaticDocument.build(jwks_document(published), max_age=max_age)
        self.discovery = StaticDocument.build(
            discovery_document(issuer_url, (r.alg.value for r in published)), max_age=max_age
        )
        active = snapshot.active()
        self.signer: Signer | None = snapshot.signers.get(active.kid) if active else None


class KeyRing:
    def __init__(self, store: KeyStore, *, issuer_url: str, max_age: int) -> None:
        self._store = store
        self._issuer_url = issuer_url
        self._max_age = max_age
        self._current: _Published | None = None

    def install(self, snapshot: KeySnapshot) -> None:
        self._current = _Published(snapshot, self._issuer_url, self._max_age)
        active = snapshot.active()
        log.info(
            "key set loaded: %d published, active kid %s",
            len(snapshot.published()),
            active.kid if active else "none",
        )

    async def refresh(self) -> bool:
        """Reload when the store's revision moved; True when something new was installed."""
        revision = await self._store.revision()
        if self._current is not None and self._current.snapshot.revision == revision:
            return False
        self.install(await self._store.load())
        return True

    @property
    def loaded(self) -> bool:
        return self._current is not None

    def _published(self) -> _Published:
        if self._current is None:
            raise Unavailable("signing keys are not loaded yet; retry shortly")
        return self._current

    @property
    def snapshot(self) -> KeySnapshot:
        return self._published().snapshot

    @property
    def jwks(self) -> StaticDocument:
        return self._published().jwks

    @property
    def discovery(self) -> StaticDocument:
        return self._published().discovery

    def signer(self) -> Signer:
        signer = self._published().signer
        if signer is None:
            raise Unavailable("no active signing key; an operator must run 'warrant keys rotate'")
        return signer

    @property
    def can_sign(self) -> bool:
        return self._current is not None and self._current.signer is not None
