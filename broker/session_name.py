"""RoleSessionName: what CloudTrail shows for every call made with vended credentials."""

from __future__ import annotations

import hashlib
import re

__all__ = ["MAX_LENGTH", "MIN_LENGTH", "session_name"]

# STS's limits for RoleSessionName (API model: 2-64 characters of [\w+=,.@-]).
MIN_LENGTH = 2
MAX_LENGTH = 64
# Hex digits of SHA-256 kept when a name is truncated: 10 digits (40 bits) keep names that share
# a long prefix apart, and leave 53 characters of the readable name.
HASH_LENGTH = 10

# STS's \w is Java's: ASCII letters, digits and underscore only, hence re.ASCII.
_DISALLOWED = re.compile(r"[^\w+=,.@-]", re.ASCII)


def session_name(tenant: str, label: str) -> str:
    """`warrant-<tenant>-<label>`, with characters STS rejects replaced by `-`.

    A name longer than 64 characters keeps its start and ends in a hash of the whole untruncated
    name, so two long names that differ only near the end stay distinct.
    """
    full = f"warrant-{tenant}-{label}"
    name = _DISALLOWED.sub("-", full)
    if len(name) > MAX_LENGTH:
        digest = hashlib.sha256(full.encode()).hexdigest()[:HASH_LENGTH]
        name = f"{name[: MAX_LENGTH - HASH_LENGTH - 1]}-{digest}"
    return name.ljust(MIN_LENGTH, "-")
