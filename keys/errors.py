"""Errors raised by the keys package.

KeysError
 ├── KeyStoreCorrupt     the store on disk cannot be trusted; the service must not start
 ├── KeyStoreLocked      another process held the store lock for too long
 ├── RotationRefused     a lifecycle change would break a verifier; says when it becomes safe
 ├── UnknownKey          no key with that kid
 └── PolicyError         rotation settings that contradict each other
"""

from __future__ import annotations

from datetime import datetime


class KeysError(Exception):
    """Base class of every error this package raises; the message is safe to show an operator."""


class KeyStoreCorrupt(KeysError):
    """The store exists but cannot be read as a consistent set of keys.

    Never answered by regenerating keys: that would invalidate every outstanding token.
    """

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"key store {path}: {problem}")
        self.path = path
        self.problem = problem


class KeyStoreLocked(KeysError):
    """Another process kept the store's lock longer than we were willing to wait."""


class RotationRefused(KeysError):
    """The requested change is not safe yet. `safe_at` says when it will be, if known."""

    def __init__(self, message: str, safe_at: datetime | None = None) -> None:
        super().__init__(message)
        self.safe_at = safe_at


class UnknownKey(KeysError):
    """No key with the given kid exists in the store."""

    def __init__(self, kid: str) -> None:
        super().__init__(f"no key with kid {kid!r}; run 'warrant keys list' to see the known kids")
        self.kid = kid


class PolicyError(KeysError):
    """Rotation policy values that cannot all hold; the message names the setting to change."""
