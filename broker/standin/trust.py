"""Role trust policies: does this principal get this action under these conditions?

An action is allowed when some `Allow` statement matches it (principal, action, every condition)
and no `Deny` statement does. Every action the call needs must be allowed: `sts:AssumeRole*`, and
`sts:TagSession` / `sts:SetSourceIdentity` when the call carries session tags or a source
identity (aws-facts §1.3). Identity-based policies of the caller are not evaluated.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from broker.standin.conditions import Context, UnsupportedCondition, conditions_hold, wildcard_match

__all__ = ["RequestPrincipal", "UnsupportedCondition", "is_allowed"]


@dataclass(frozen=True)
class RequestPrincipal:
    """`kind` is the Principal element's key; `names` are every string that identifies the caller
    there (e.g. the provider ARN; or a role ARN, its session ARN, the account root and id)."""

    kind: Literal["AWS", "Federated"]
    names: frozenset[str]


def _strings(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise UnsupportedCondition(f"expected a string or a list of strings, got {value!r}")


def _principal_matches(element: object, principal: RequestPrincipal) -> bool:
    if element == "*":
        return True
    if not isinstance(element, Mapping):
        raise UnsupportedCondition('Principal must be "*" or an object')
    listed = element.get(principal.kind)
    if listed is None:
        return False
    return any(name == "*" or name in principal.names for name in _strings(listed))


def _action_matches(patterns: object, action: str) -> bool:
    # Action names are case-insensitive in IAM.
    return any(wildcard_match(p, action, ignore_case=True) for p in _strings(patterns))


def _element_matches(
    statement: Mapping[str, Any], name: str, matches: Callable[[object], bool]
) -> bool:
    """`name` (e.g. Action) must match, or `Not<name>` must not; a statement with neither
    matches nothing."""
    if name in statement:
        return matches(statement[name])
    if f"Not{name}" in statement:
        return not matches(statement[f"Not{name}"])
    return False


def _statement_matches(
    statement: Mapping[str, Any], principal: RequestPrincipal, action: str, context: Context
) -> bool:
    return (
        _element_matches(statement, "Principal", lambda e: _principal_matches(e, principal))
        and _element_matches(statement, "Action", lambda e: _action_matches(e, action))
        and conditions_hold(statement.get("Condition"), context)
    )


def _statements(policy: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    raw = policy.get("Statement", [])
    statements = raw if isinstance(raw, list) else [raw]
    if not all(isinstance(s, Mapping) for s in statements):
        raise UnsupportedCondition("Statement must be an object or a list of objects")
    return statements


def is_allowed(
    policy: Mapping[str, Any],
    principal: RequestPrincipal,
    actions: Iterable[str],
    context: Context,
) -> bool:
    """Raises UnsupportedCondition for a policy the stand-in cannot evaluate faithfully."""
    statements = _statements(policy)
    for action in actions:
        allowed = False
        for statement in statements:
            if not _statement_matches(statement, principal, action, context):
                continue
            effect = statement.get("Effect")
            if effect == "Deny":
                return False
            if effect == "Allow":
                allowed = True
        if not allowed:
            return False
    return True
