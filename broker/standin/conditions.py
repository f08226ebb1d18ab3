"""IAM condition blocks, for the operators trust policies use (IAM user guide,
reference_policies_elements_condition_operators and ..._multi-value-conditions).

    {"StringEquals": {"key": "v" | ["v1", "v2"]}, "ForAnyValue:StringLike": {...}, ...}

* every operator in a block, and every key under an operator, must hold (AND);
* the policy values of one key are alternatives (OR); a negated operator holds when the request
  value matches none of them;
* key names are case-insensitive, values are compared case-sensitively (except *IgnoreCase);
* a key missing from the request fails a positive operator and satisfies a negated one;
  `...IfExists` holds when the key is missing; `ForAllValues:` holds for a missing or empty key,
  `ForAnyValue:` does not;
* `Null` tests presence: `"true"` means the key must be absent.

Anything else raises UnsupportedCondition, which the gate turns into AccessDenied: a stand-in
that silently ignored a condition would let through what AWS refuses.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from functools import lru_cache

__all__ = ["Context", "UnsupportedCondition", "conditions_hold"]

Context = Mapping[str, tuple[str, ...]]
"""Request condition keys, lower-cased, to their values (one for single-valued keys)."""


class UnsupportedCondition(ValueError):
    """An operator or policy shape the stand-in does not evaluate."""


@lru_cache(maxsize=512)
def _wildcard(pattern: str, ignore_case: bool) -> re.Pattern[str]:
    """`*` is any run of characters (also none), `?` exactly one; nothing else is special."""
    parts = (".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile("".join(parts), re.DOTALL | (re.IGNORECASE if ignore_case else 0))


def wildcard_match(pattern: str, value: str, *, ignore_case: bool = False) -> bool:
    return _wildcard(pattern, ignore_case).fullmatch(value) is not None


Matcher = Callable[[str, tuple[str, ...]], bool]

_POSITIVE: Mapping[str, Matcher] = {
    "StringEquals": lambda value, allowed: value in allowed,
    "StringLike": lambda value, allowed: any(wildcard_match(p, value) for p in allowed),
    "StringEqualsIgnoreCase": lambda value, allowed: (
        value.casefold() in {a.casefold() for a in allowed}
    ),
}
_NEGATED: Mapping[str, str] = {
    "StringNotEquals": "StringEquals",
    "StringNotLike": "StringLike",
    "StringNotEqualsIgnoreCase": "StringEqualsIgnoreCase",
}


def _values(raw: object, where: str) -> tuple[str, ...]:
    values = raw if isinstance(raw, list) else [raw]
    if not values or not all(isinstance(v, str | bool | int) for v in values):
        raise UnsupportedCondition(f"condition values for {where} must be strings")
    return tuple(str(v).lower() if isinstance(v, bool) else str(v) for v in values)


def _value_matches(operator: str, value: str, allowed: tuple[str, ...]) -> bool:
    if operator in _POSITIVE:
        return _POSITIVE[operator](value, allowed)
    return not _POSITIVE[_NEGATED[operator]](value, allowed)


def _holds(qualified: str, key: str, allowed: tuple[str, ...], context: Context) -> bool:
    request = context.get(key.lower())
    qualifier, _, operator = qualified.rpartition(":")
    if_exists = operator.endswith("IfExists")
    operator = operator.removesuffix("IfExists")
    if operator == "Null" and not qualifier and not if_exists:
        if not set(allowed) <= {"true", "false"}:
            raise UnsupportedCondition("Null takes true or false")
        absent = not request
        return all(absent == (a == "true") for a in allowed)
    if operator not in _POSITIVE and operator not in _NEGATED:
        raise UnsupportedCondition(f"condition operator {qualified} is not supported")
    if qualifier == "ForAnyValue":
        return any(_value_matches(operator, v, allowed) for v in request or ())
    if qualifier == "ForAllValues":
        return all(_value_matches(operator, v, allowed) for v in request or ())
    if qualifier:
        raise UnsupportedCondition(f"condition qualifier {qualifier} is not supported")
    if not request:
        return if_exists or operator in _NEGATED
    if operator in _NEGATED:
        return all(_value_matches(operator, v, allowed) for v in request)
    return any(_value_matches(operator, v, allowed) for v in request)


def conditions_hold(block: object, context: Context) -> bool:
    """True when every condition in `block` (a statement's `Condition`) holds for `context`."""
    if block is None:
        return True
    if not isinstance(block, Mapping):
        raise UnsupportedCondition("Condition must be an object")
    for qualified, keys in block.items():
        if not isinstance(keys, Mapping):
            raise UnsupportedCondition(f"{qualified} must map condition keys to values")
        for key, raw in keys.items():
            if not _holds(str(qualified), str(key), _values(raw, f"{qualified}/{key}"), context):
                return False
    return True
