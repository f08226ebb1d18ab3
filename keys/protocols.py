"""The seams of the keys package: where keys are kept, and what signs."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable

from keys.model import Algorithm, KeyRecord, KeyState


@runtime_checkable
class Signer(Protocol):
    """Signs JWS signing inputs with one key. Exposes only public facts about the key."""

    @property
    def kid(self) -> str: ...

    @property
    def alg(self) -> Algorithm: ...

    async def sign(self, signing_input: bytes) -> bytes:
        """Return the raw JWS signature (for ES256: r||s, 64 bytes, not DER)."""
        ...


@dataclass(frozen=True, slots=True)
class KeySnapshot:
    """Every record in the store at one revision, with a signer for each key that may sign."""

    records: tuple[KeyRecord, ...]
    signers: Mapping[str, Signer] = field(repr=False)
    revision: str

    def active(self) -> KeyRecord | None:
        return next((r for r in self.records if r.state is KeyState.ACTIVE), None)

    def published(self) -> tuple[KeyRecord, ...]:
        return tuple(r for r in self.records if r.published)


@dataclass(frozen=True, slots=True)
class NewKey:
    alg: Algorithm
    state: KeyState  # PENDING normally; ACTIVE only on bootstrap or an emergency


@dataclass(frozen=True, slots=True)
class Plan:
    """What a lifecycle change does. The store generates, transitions and removes, atomically.

    Timestamps of transitions are `now`: ACTIVE sets activated_at, RETIRED sets retired_at,
    REVOKED sets revoked_at.
    """

    now: datetime
    generate: tuple[NewKey, ...] = ()
    transitions: Mapping[str, KeyState] = field(default_factory=dict)
    remove: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.generate or self.transitions or self.remove)


Planner = Callable[[Sequence[KeyRecord]], Plan]


class KeyStore(Protocol):
    """Durable home of the key records and private keys.

    An empty store loads as a snapshot with no records; the caller decides to bootstrap.
    A store that exists but is inconsistent raises KeyStoreCorrupt naming what is wrong:
    it is never silently regenerated.
    """

    async def load(self) -> KeySnapshot: ...

    async def revision(self) -> str:
        """A cheap token that changes whenever the store changes (for polling)."""
        ...

    async def apply(self, planner: Planner) -> KeySnapshot:
        """Under an exclusive lock held across processes: read the current records, call
        `planner(records)`, generate the new keys, persist everything atomically, and return
        the new snapshot. If the planner raises, nothing is written and the error propagates.
        An empty plan writes nothing."""
        ...
