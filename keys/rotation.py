"""Rotation policy as pure functions: (records, now, policy) -> Plan. No I/O, no clock.

A key's life: PENDING (published, waiting out `publish_ahead` so every verifier's cached JWKS
has it) -> ACTIVE (the one key that signs) -> RETIRED (published for `retire_for`, until every
token it signed is dead) -> pruned. REVOKED drops a key from the JWKS at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from keys.errors import RotationRefused, UnknownKey
from keys.model import Algorithm, KeyRecord, KeyState, RotationPolicy
from keys.protocols import NewKey, Plan

__all__ = [
    "RevokeOutcome",
    "RotationOutcome",
    "format_time",
    "pending_keys",
    "plan_bootstrap",
    "plan_ensure_pending",
    "plan_maintenance",
    "plan_prune",
    "plan_revoke",
    "plan_rotate",
    "retire_after",
    "safe_to_activate_at",
]


@dataclass(frozen=True, slots=True)
class RotationOutcome:
    """A rotation plan and what it means for the operator."""

    plan: Plan
    forced: bool  # a key signs before it has been published for publish_ahead
    promoted_kid: str | None  # None when a brand-new key was made active (forced, no pending)
    retired_kid: str
    warning: str | None  # set when forced: what verifiers may do


@dataclass(frozen=True, slots=True)
class RevokeOutcome:
    """A revocation plan and the message the operator must read."""

    plan: Plan
    kid: str
    was_active: bool
    promoted_kid: str | None  # the pending key that now signs, if the active key was revoked
    generated_active: bool  # no pending key existed, so a brand-new key signs at once
    message: str


def safe_to_activate_at(record: KeyRecord, policy: RotationPolicy) -> datetime:
    """When the key has been in the JWKS long enough for every cached copy to include it."""
    return record.created_at + policy.publish_ahead


def retire_after(record: KeyRecord, policy: RotationPolicy) -> datetime | None:
    """When a retired key may leave the JWKS (every token it signed is dead), else None."""
    if record.state is not KeyState.RETIRED or record.retired_at is None:
        return None
    return record.retired_at + policy.retire_for


def pending_keys(records: Sequence[KeyRecord]) -> list[KeyRecord]:
    """Pending keys, oldest first."""
    return sorted(
        (r for r in records if r.state is KeyState.PENDING), key=lambda r: (r.created_at, r.kid)
    )


def plan_bootstrap(records: Sequence[KeyRecord], now: datetime, alg: Algorithm) -> Plan:
    """An empty store gets an active key and a pending one; any other store is left alone.

    A brand-new issuer has no JWKS cached anywhere, so its first key may sign at once.
    """
    if records:
        return Plan(now=now)
    return Plan(now=now, generate=(NewKey(alg, KeyState.ACTIVE), NewKey(alg, KeyState.PENDING)))


def plan_ensure_pending(
    records: Sequence[KeyRecord], now: datetime, policy: RotationPolicy, alg: Algorithm
) -> Plan:
    """Publish a pending key if there is none, so its publish-ahead clock starts now.

    An empty store is left alone: it needs `plan_bootstrap`.
    """
    if not records or pending_keys(records):
        return Plan(now=now)
    return _within_capacity(
        Plan(now=now, generate=(NewKey(alg, KeyState.PENDING),)), records, policy
    )


def plan_rotate(
    records: Sequence[KeyRecord],
    now: datetime,
    policy: RotationPolicy,
    alg: Algorithm,
    *,
    force: bool = False,
) -> RotationOutcome:
    """Promote the oldest pending key that is safe to sign, retire the active key, and publish
    a new pending key. Refuses when no pending key is safe yet, unless `force`, and (even with
    `force`) when the JWKS would grow past `policy.max_published`."""
    outcome = _rotation(records, now, policy, alg, force=force)
    _within_capacity(outcome.plan, records, policy)
    return outcome


def _rotation(
    records: Sequence[KeyRecord],
    now: datetime,
    policy: RotationPolicy,
    alg: Algorithm,
    *,
    force: bool,
) -> RotationOutcome:
    active = _active(records)
    pending = pending_keys(records)
    ready = [p for p in pending if safe_to_activate_at(p, policy) <= now]
    if ready:
        chosen: KeyRecord | None = ready[0]
        warning = None
    elif not force:
        raise _not_ready(pending, now, policy)
    elif pending:
        chosen = pending[0]
        warning = (
            f"key {chosen.kid} was published only {_duration(now - chosen.created_at)} ago, "
            f"less than the publish-ahead of {_duration(policy.publish_ahead)}"
        )
    else:
        chosen = None
        warning = "no pending key existed, so a brand-new key signs at once"
    transitions = {active.kid: KeyState.RETIRED}
    generate = [NewKey(alg, KeyState.PENDING)]
    if chosen is None:
        generate.insert(0, NewKey(alg, KeyState.ACTIVE))
    else:
        transitions[chosen.kid] = KeyState.ACTIVE
    plan = Plan(now=now, generate=tuple(generate), transitions=transitions)
    if warning is not None:
        warning += (
            "; verifiers whose cached JWKS lacks the new key will reject its tokens for up to "
            f"{_duration(policy.jwks_max_age)} (the JWKS max-age)"
        )
    return RotationOutcome(
        plan=plan,
        forced=warning is not None,
        promoted_kid=None if chosen is None else chosen.kid,
        retired_kid=active.kid,
        warning=warning,
    )


def plan_revoke(
    records: Sequence[KeyRecord],
    kid: str,
    now: datetime,
    alg: Algorithm,
    *,
    policy: RotationPolicy,
) -> RevokeOutcome:
    """Drop `kid` from the JWKS at once. Revoking the active key promotes the oldest pending key
    whatever its age (an emergency), or makes a brand-new key active; a pending key remains."""
    target = next((r for r in records if r.kid == kid), None)
    if target is None:
        raise UnknownKey(kid)
    if target.state is KeyState.REVOKED:
        raise RotationRefused(f"key {kid} is already revoked")
    was_active = target.state is KeyState.ACTIVE
    transitions = {kid: KeyState.REVOKED}
    generate: list[NewKey] = []
    remaining = [p for p in pending_keys(records) if p.kid != kid]
    promoted: KeyRecord | None = None
    if was_active and remaining:
        promoted = remaining.pop(0)
        transitions[promoted.kid] = KeyState.ACTIVE
    elif was_active:
        generate.append(NewKey(alg, KeyState.ACTIVE))
    if not remaining:
        generate.append(NewKey(alg, KeyState.PENDING))
    plan = Plan(now=now, generate=tuple(generate), transitions=transitions)
    if _published_after(records, plan) > policy.max_published:
        # Revocation must never be refused for room: skip the spare pending key (maintenance
        # publishes one after the next prune) rather than keep a compromised key published.
        plan = Plan(
            now=now,
            generate=tuple(g for g in generate if g.state is KeyState.ACTIVE),
            transitions=transitions,
        )
    message = (
        f"key {kid} is revoked and no longer published: tokens signed with it are now invalid "
        "(verifiers may accept them until their cached JWKS expires, up to "
        f"{_duration(policy.jwks_max_age)})."
    )
    if promoted is not None and safe_to_activate_at(promoted, policy) > now:
        message += (
            f" Key {promoted.kid} signs now although it was published only "
            f"{_duration(now - promoted.created_at)} ago: verifiers with a cached JWKS may "
            f"reject new tokens for up to {_duration(policy.jwks_max_age)}."
        )
    elif promoted is not None:
        message += f" Key {promoted.kid} signs now."
    elif was_active:
        message += (
            " No pending key existed, so a brand-new key signs now: verifiers with a cached "
            f"JWKS may reject new tokens for up to {_duration(policy.jwks_max_age)}."
        )
    return RevokeOutcome(
        plan=plan,
        kid=kid,
        was_active=was_active,
        promoted_kid=None if promoted is None else promoted.kid,
        generated_active=was_active and promoted is None,
        message=message,
    )


def plan_prune(records: Sequence[KeyRecord], now: datetime, policy: RotationPolicy) -> Plan:
    """Remove retired keys whose tokens are all dead, and revoked records. Never a key that
    is active or pending."""
    remove = tuple(r.kid for r in records if _prunable(r, now, policy))
    return Plan(now=now, remove=remove)


def plan_maintenance(
    records: Sequence[KeyRecord], now: datetime, policy: RotationPolicy, alg: Algorithm
) -> Plan:
    """What the running service does every minute: bootstrap an empty store, keep a pending
    key published, rotate when the active key is due and a pending key is safe, prune."""
    if not records:
        return plan_bootstrap(records, now, alg)
    generate: tuple[NewKey, ...] = ()
    transitions: Mapping[str, KeyState] = {}
    active = next((r for r in records if r.state is KeyState.ACTIVE), None)
    due = active is not None and _activated(active) + policy.rotation_period <= now
    ready = [p for p in pending_keys(records) if safe_to_activate_at(p, policy) <= now]
    if due and ready:
        rotation = _rotation(records, now, policy, alg, force=False)
        generate, transitions = rotation.plan.generate, rotation.plan.transitions
    elif not pending_keys(records):
        generate = (NewKey(alg, KeyState.PENDING),)
    prune = plan_prune(records, now, policy)
    plan = Plan(now=now, generate=generate, transitions=transitions, remove=prune.remove)
    if _published_after(records, plan) > policy.max_published and not prune.empty:
        # No room for the new key yet: prune now, and the next run decides again.
        return prune
    return _within_capacity(plan, records, policy)


def format_time(value: datetime) -> str:
    """UTC, ISO-8601, to the second: how times are shown to operators."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _active(records: Sequence[KeyRecord]) -> KeyRecord:
    active = next((r for r in records if r.state is KeyState.ACTIVE), None)
    if active is None:
        raise RotationRefused(
            "the key store has no active key, so there is nothing to rotate; "
            "the issuer creates its first keys when it starts"
        )
    return active


def _not_ready(pending: Sequence[KeyRecord], now: datetime, policy: RotationPolicy) -> Exception:
    if not pending:
        safe_at = now + policy.publish_ahead
        return RotationRefused(
            "refusing to rotate: there is no pending key, so no key has been published ahead "
            "of time; a new pending key is published now: run 'warrant keys rotate' again after "
            f"{_duration(policy.publish_ahead)} (at {format_time(safe_at)}), or pass --force "
            "to make a brand-new key sign at once",
            safe_at,
        )
    oldest = pending[0]
    safe_at = safe_to_activate_at(oldest, policy)
    return RotationRefused(
        f"refusing to rotate: pending key {oldest.kid} was published at "
        f"{format_time(oldest.created_at)} and becomes safe to activate at "
        f"{format_time(safe_at)} (in {_duration(safe_at - now)}); verifiers may not have it in "
        "their cached JWKS before then. Run 'warrant keys rotate' again then, or pass --force",
        safe_at,
    )


def _within_capacity(plan: Plan, records: Sequence[KeyRecord], policy: RotationPolicy) -> Plan:
    published = _published_after(records, plan)
    if published <= policy.max_published:
        return plan
    expiries = [e for r in records if (e := retire_after(r, policy)) is not None and e > plan.now]
    safe_at = min(expiries, default=None)
    when = "" if safe_at is None else f"; the next retired key expires at {format_time(safe_at)}"
    raise RotationRefused(
        f"refusing: the JWKS would hold {published} keys, more than the limit of "
        f"{policy.max_published}; run 'warrant keys prune' to drop retired keys whose tokens "
        f"have expired{when}",
        safe_at,
    )


def _published_after(records: Sequence[KeyRecord], plan: Plan) -> int:
    states = {r.kid: plan.transitions.get(r.kid, r.state) for r in records}
    for kid in plan.remove:
        states.pop(kid, None)
    published = sum(1 for s in states.values() if s is not KeyState.REVOKED)
    return published + len(plan.generate)


def _prunable(record: KeyRecord, now: datetime, policy: RotationPolicy) -> bool:
    if record.state is KeyState.REVOKED:
        return True
    expires = retire_after(record, policy)
    return expires is not None and expires <= now


def _activated(record: KeyRecord) -> datetime:
    return record.activated_at if record.activated_at is not None else record.created_at


def _duration(value: timedelta) -> str:
    seconds = max(0, int(value.total_seconds()))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [f"{hours}h"] if hours else []
    if minutes:
        parts.append(f"{minutes}m")
    if seconds or not parts:
        parts.append(f"{seconds}s")
    return "".join(parts)
