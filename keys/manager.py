"""KeyManager: runs the rotation policy against a KeyStore, deciding under the store's lock."""

from __future__ import annotations

import builtins
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
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

__all__ = ["KeyChange", "KeyChangeHook", "KeyManager"]


@dataclass(frozen=True, slots=True)
class KeyChange:
    """A lifecycle change that was persisted, for the caller's audit log."""

    event: str  # key.bootstrap, key.rotate, key.revoke, key.prune, key.maintain
    detail: str


KeyChangeHook = Callable[[KeyChange], Awaitable[None]]


def _describe(plan: Plan) -> str:
    parts = [f"{kid}->{state.value}" for kid, state in sorted(plan.transitions.items())]
    parts += [f"new {k.alg.value} {k.state.value} key" for k in plan.generate]
    parts += [f"removed {kid}" for kid in plan.remove]
    return "; ".join(parts)


class KeyManager:
    """Lifecycle operations. Each planner runs inside `store.apply`, on the records read under
    the lock, so two processes never decide on stale state."""

    def __init__(
        self,
        store: KeyStore,
        policy: RotationPolicy,
        alg: Algorithm,
        clock: Callable[[], datetime],
        on_change: KeyChangeHook | None = None,
    ) -> None:
        self._store = store
        self._policy = policy
        self._alg = alg
        self._clock = clock
        self._on_change = on_change

    async def _apply(
        self, event: str, planner: Callable[[Sequence[KeyRecord]], Plan]
    ) -> KeySnapshot:
        """Apply under the store's lock, then report what changed (nothing for an empty plan)."""
        applied: builtins.list[Plan] = []

        def recording(records: Sequence[KeyRecord]) -> Plan:
            plan = planner(records)
            applied.append(plan)
            return plan

        snapshot = await self._store.apply(recording)
        if self._on_change is not None and applied and not applied[-1].empty:
            await self._on_change(KeyChange(event, _describe(applied[-1])))
        return snapshot

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
        return await self._apply(
            "key.bootstrap", lambda records: plan_bootstrap(records, self._clock(), self._alg)
        )

    async def maintain(self) -> KeySnapshot:
        """The periodic job: bootstrap, keep a pending key, rotate when due, prune."""
        return await self._apply(
            "key.maintain",
            lambda records: plan_maintenance(records, self._clock(), self._policy, self._alg),
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

        await self._apply("key.rotate" if not force else "key.rotate.force", planner)
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

        await self._apply("key.revoke", planner)
        return outcomes[-1]

    async def prune(self) -> builtins.list[str]:
        """Remove expired retired keys and revoked records; return the removed kids."""
        removed: builtins.list[str] = []

        def planner(records: Sequence[KeyRecord]) -> Plan:
            plan = plan_prune(records, self._clock(), self._policy)
            removed[:] = plan.remove
            return plan

        await self._apply("key.prune", planner)
        return removed

    async def list(self) -> tuple[KeyRecord, ...]:
        """Every record in the store, as the manifest orders them."""
        return (await self._store.load()).records
