"""Key records, states and the rotation policy: plain frozen data, no I/O."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from keys.errors import PolicyError


class KeyState(enum.StrEnum):
    PENDING = "pending"  # published in the JWKS, never signs
    ACTIVE = "active"  # exactly one; the only key that signs
    RETIRED = "retired"  # still published so outstanding tokens verify; never signs
    REVOKED = "revoked"  # dropped from the JWKS at once; kept in the manifest for the record


PUBLISHED_STATES = frozenset({KeyState.PENDING, KeyState.ACTIVE, KeyState.RETIRED})


class Algorithm(enum.StrEnum):
    RS256 = "RS256"  # RSA-2048, PKCS#1 v1.5; accepted by every verifier, AWS STS included
    ES256 = "ES256"  # P-256; opt-in


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """What the manifest says about one key. Holds public material only."""

    kid: str  # RFC 7638 thumbprint (base64url SHA-256) of the public key
    alg: Algorithm
    state: KeyState
    created_at: datetime  # also the moment it was first published
    public_jwk: Mapping[str, str] = field(repr=False)
    activated_at: datetime | None = None
    retired_at: datetime | None = None
    revoked_at: datetime | None = None

    @property
    def published(self) -> bool:
        return self.state in PUBLISHED_STATES


# Defaults. Each says why.
# A key must sit in the JWKS this long before it signs, so every verifier that caches our JWKS
# (STS, jose's 10-minute remote JWKS cache) has refetched and seen it.
DEFAULT_PUBLISH_AHEAD = timedelta(hours=1)
# Scheduled rotation period: limits how much a leaked key can sign; EKS rotates about weekly.
DEFAULT_ROTATION_PERIOD = timedelta(days=7)
# Cache-Control max-age of the JWKS and discovery document: long enough that STS never refetches
# per call (no-cache makes parallel exchanges fail), short enough that a revocation spreads fast.
DEFAULT_JWKS_MAX_AGE = timedelta(seconds=300)
# The longest token lifetime the issuer will mint.
DEFAULT_MAX_TOKEN_TTL = timedelta(seconds=3600)
# AWS accepts a token up to 5 minutes after exp (clock skew), so a retired key must outlive that.
RETIRE_LEEWAY = timedelta(minutes=5)
# How often a running service notices changes the CLI made to the store.
DEFAULT_RELOAD_INTERVAL = timedelta(seconds=2)
# JWKS bound: STS was seen to fail with more than 100 keys; we stay far below.
MAX_PUBLISHED_KEYS = 10


@dataclass(frozen=True, slots=True)
class RotationPolicy:
    publish_ahead: timedelta = DEFAULT_PUBLISH_AHEAD
    rotation_period: timedelta = DEFAULT_ROTATION_PERIOD
    jwks_max_age: timedelta = DEFAULT_JWKS_MAX_AGE
    max_token_ttl: timedelta = DEFAULT_MAX_TOKEN_TTL
    reload_interval: timedelta = DEFAULT_RELOAD_INTERVAL
    max_published: int = MAX_PUBLISHED_KEYS

    @property
    def retire_for(self) -> timedelta:
        """How long a retired key stays published: every token it signed expires, plus the
        verifiers' JWKS cache age, plus AWS's 5-minute skew allowance."""
        return self.max_token_ttl + self.jwks_max_age + RETIRE_LEEWAY

    def validate(self) -> None:
        """Raise PolicyError naming the setting to change when the values contradict each other."""
        if self.jwks_max_age <= timedelta(0):
            raise PolicyError(
                "WARRANT_JWKS_MAX_AGE must be positive: max-age=0 makes STS refetch "
                "the JWKS on every call and parallel exchanges fail"
            )
        if self.publish_ahead <= self.jwks_max_age + self.reload_interval:
            raise PolicyError(
                "WARRANT_KEY_PUBLISH_AHEAD "
                f"({int(self.publish_ahead.total_seconds())}s) must be longer than the JWKS "
                f"max-age ({int(self.jwks_max_age.total_seconds())}s) plus the key reload interval "
                f"({int(self.reload_interval.total_seconds())}s), or a verifier with a cached JWKS "
                "meets an unknown kid"
            )
        if self.rotation_period <= self.publish_ahead:
            raise PolicyError(
                "WARRANT_KEY_ROTATION_PERIOD must be longer than WARRANT_KEY_PUBLISH_AHEAD: "
                "the next key has to be published long enough before it is due to sign"
            )
        if self.max_token_ttl <= timedelta(0):
            raise PolicyError("WARRANT_TOKEN_MAX_TTL must be positive")
        if not 3 <= self.max_published <= 100:
            raise PolicyError("at most-published keys must be between 3 and 100")
