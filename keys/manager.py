"""KeyManager: runs the rotation policy against a KeyStore, deciding under the store's lock."""

from __future__ import annotations

import builtins
from collections.abc import Callable, Sequence
from datetime import datetime

from keys.errors import RotationRefused
from keys.model import Algorithm, KeyRecord, RotationPolicy
from keys.protocols import KeySnapshot, KeyStore, Plan
from keys.rotation import (
    RevokeOutcome,
    RotationOutcome,
    pending_keys,
    plan_bootstrap,
    plan_ensure_pending,
    plan_maintenance,
    plan_prune,
    plan_revoke,
    plan_rotate,
)

__all__ = ["KeyManager"]


class KeyManager:
    """Lifecycle operations. Each planner runs inside `store.apply`, on the records read under
    the lock, so two processes never decide on stale state."""

    def __init__(
        self,
        store: KeyStore,
        policy: RotationPolicy,
        alg: Algorithm,
        clock: Callable[[], datetime],
    ) -> None:
        self._store = store
        self._policy = policy
        self._alg = alg
        self._clock = clock

    @property
    def store(self) -> KeyStore:
        return self._store

    @property
    def policy(self) -> RotationPolicy:
        return self._policy

    @property
    def alg(self) -> Algorithm:
        return self._alg

    async def ensure_initialized(self) -> KeySnapshot:
        """Create the first active and pending keys if the store is empty; else change nothing."""
        return await self._store.apply(
            lambda records: plan_bootstrap(records, self._clock(), self._alg)
        )

    async def maintain(self) -> KeySnapshot:
        """The periodic job: bootstrap, keep a pending key, rotate when due, prune."""
        return await self._store.apply(
            lambda records: plan_maintenance(records, self._clock(), self._policy, self._alg)
        )

    async def rotate(self, force: bool = False) -> RotationOutcome:
        """Rotate now, or raise RotationRefused saying when it becomes safe.

        With no pending key and no `force`, a pending key is published first, so that its
        publish-ahead clock is already running when the operator comes back.
        """
        outcomes: builtins.list[RotationOutcome] = []
        refusals: builtins.list[RotationRefused] = []

        def planner(records: Sequence[KeyRecord]) -> Plan:
            now = self._clock()
            try:
                outcome = plan_rotate(records, now, self._policy, self._alg, force=force)
            except RotationRefused as refusal:
                if force or not records or pending_keys(records):
                    raise
                refusals.append(refusal)
                return plan_ensure_pending(records, now, self._policy, self._alg)
            outcomes.append(outcome)
            return outcome.plan

        await self._store.apply(planner)
        if refusals:
            raise refusals[-1]
        return outcomes[-1]

    async def revoke(self, kid: str) -> RevokeOutcome:
        """Revoke `kid` at once (see `plan_revoke`); raises UnknownKey or RotationRefused."""
        outcomes: builtins.list[RevokeOutcome] = []

        def planner(records: Sequence[KeyRecord]) -> Plan:
            outcome = plan_revoke(records, kid, self._clock(), self._alg, policy=self._policy)
            outcomes.append(outcome)
            return outcome.plan

        await self._store.apply(planner)
        return outcomes[-1]

    async def prune(self) -> builtins.list[str]:
        """Remove expired retired keys and revoked records; return the removed kids."""
        removed: builtins.list[str] = []

        def planner(records: Sequence[KeyRecord]) -> Plan:
            plan = plan_prune(records, self._clock(), self._policy)
            removed[:] = plan.remove
            return plan

        await self._store.apply(planner)
        return removed

    async def list(self) -> tuple[KeyRecord, ...]:
        """Every record in the store, as the manifest orders them."""
        return (await self._store.load()).records
