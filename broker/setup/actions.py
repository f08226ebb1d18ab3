"""IAM action patterns: the wildcard matcher and a small policy evaluator, used to prove what a
generated policy grants. Pure functions; IAM's rules, not a simulation of every IAM feature."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["action_matches", "allowed", "matches_any", "statements"]


@functools.lru_cache(maxsize=1024)
def _compile(pattern: str) -> re.Pattern[str]:
    # IAM action wildcards: `*` is any run of characters (also none), `?` exactly one. Service
    # prefix and action name are case-insensitive ("iam:ListAccessKeys" == "IAM:listaccesskeys").
    parts = ("." if char == "?" else ".*" if char == "*" else re.escape(char) for char in pattern)
    return re.compile("".join(parts), re.IGNORECASE | re.DOTALL)


def action_matches(pattern: str, action: str) -> bool:
    """Whether the IAM action pattern `pattern` (with `*` and `?`) covers `action`."""
    return _compile(pattern).fullmatch(action) is not None


def matches_any(patterns: Iterable[str], action: str) -> bool:
    """Whether any of `patterns` covers `action`."""
    return any(action_matches(pattern, action) for pattern in patterns)


def statements(policy: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """A policy's statements as a list (IAM allows a single statement object too)."""
    found = policy["Statement"]
    return [found] if isinstance(found, Mapping) else list(found)


def _as_list(value: str | Sequence[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _covers(statement: Mapping[str, Any], action: str) -> bool:
    if "Action" in statement:
        return matches_any(_as_list(statement["Action"]), action)
    return not matches_any(_as_list(statement["NotAction"]), action)


def allowed(policy: Mapping[str, Any], action: str) -> bool:
    """Whether `policy` allows `action` on any resource, ignoring conditions: an explicit Deny
    wins, then an Allow, else the implicit deny. Statements with a Condition are skipped, as they
    do not apply unconditionally."""
    applicable = [s for s in statements(policy) if "Condition" not in s and _covers(s, action)]
    if any(s["Effect"] == "Deny" for s in applicable):
        return False
    return any(s["Effect"] == "Allow" for s in applicable)
