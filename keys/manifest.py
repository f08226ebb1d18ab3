"""The manifest's wire format: key records to JSON and back, checked field by field.

    {"version": 1, "keys": [{"kid", "alg", "state", "created_at", "activated_at",
                             "retired_at", "revoked_at", "public_jwk"}, ...]}

Timestamps are ISO-8601 in UTC. Decoding trusts nothing: every kid must be the RFC 7638
thumbprint of the public JWK stored with it.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import TypeVar

from keys.errors import KeysError
from keys.jwk import PUBLIC_MEMBERS, check_key_matches_alg, import_jwk
from keys.model import Algorithm, KeyRecord, KeyState

__all__ = [
    "MANIFEST_VERSION",
    "ManifestError",
    "consistency_problem",
    "decode_manifest",
    "encode_manifest",
]

MANIFEST_VERSION = 1

_FIELDS = frozenset(
    {"kid", "alg", "state", "created_at", "activated_at", "retired_at", "revoked_at", "public_jwk"}
)
# The timestamp each state cannot do without.
_REQUIRED_STAMP = {
    KeyState.ACTIVE: "activated_at",
    KeyState.RETIRED: "retired_at",
    KeyState.REVOKED: "revoked_at",
}


class ManifestError(ValueError):
    """The manifest bytes do not describe a valid set of records; the message says what."""


def encode_manifest(records: Iterable[KeyRecord]) -> bytes:
    """Indented, sorted JSON (operators read this file), records oldest first."""
    ordered = sorted(records, key=lambda r: (r.created_at, r.kid))
    document = {"version": MANIFEST_VERSION, "keys": [_encode_record(r) for r in ordered]}
    return json.dumps(document, indent=2, sort_keys=True).encode() + b"\n"


def decode_manifest(raw: bytes) -> tuple[KeyRecord, ...]:
    """Parse and check every field; ManifestError names the first problem found."""
    try:
        document = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"is not valid JSON ({exc})") from exc
    if not isinstance(document, dict):
        raise ManifestError("is not a JSON object")
    version = document.get("version")
    if version != MANIFEST_VERSION:
        raise ManifestError(
            f"has version {version!r}; this Warrant reads version {MANIFEST_VERSION}"
        )
    entries = document.get("keys")
    if not isinstance(entries, list):
        raise ManifestError('has no "keys" list')
    records = tuple(_decode_record(i, entry) for i, entry in enumerate(entries))
    problem = consistency_problem(records)
    if problem is not None:
        raise ManifestError(problem)
    return records


def consistency_problem(records: Sequence[KeyRecord]) -> str | None:
    """What is wrong with the set as a whole, or None: kids unique, exactly one active key."""
    duplicates = sorted(kid for kid, n in Counter(r.kid for r in records).items() if n > 1)
    if duplicates:
        return f"kid {duplicates[0]} appears more than once"
    active = [r.kid for r in records if r.state is KeyState.ACTIVE]
    if records and len(active) != 1:
        return f"has {len(active)} active keys; exactly one must be active"
    return None


def _encode_record(record: KeyRecord) -> dict[str, object]:
    return {
        "kid": record.kid,
        "alg": record.alg.value,
        "state": record.state.value,
        "created_at": _format_time(record.created_at),
        "activated_at": _format_time(record.activated_at),
        "retired_at": _format_time(record.retired_at),
        "revoked_at": _format_time(record.revoked_at),
        "public_jwk": dict(record.public_jwk),
    }


def _decode_record(index: int, entry: object) -> KeyRecord:
    where = f"keys[{index}]"
    if not isinstance(entry, dict):
        raise ManifestError(f"{where} is not a JSON object")
    missing = sorted(_FIELDS - entry.keys())
    unknown = sorted(entry.keys() - _FIELDS)
    if missing or unknown:
        raise ManifestError(f"{where} lacks fields {missing} or has unknown fields {unknown}")
    kid = entry["kid"]
    if not isinstance(kid, str) or not kid:
        raise ManifestError(f"{where}.kid is not a non-empty string")
    where = f"key {kid}"
    alg = _enum(Algorithm, entry["alg"], f"{where}: alg")
    state = _enum(KeyState, entry["state"], f"{where}: state")
    record = KeyRecord(
        kid=kid,
        alg=alg,
        state=state,
        created_at=_required_time(entry["created_at"], f"{where}: created_at"),
        activated_at=_parse_time(entry["activated_at"], f"{where}: activated_at"),
        retired_at=_parse_time(entry["retired_at"], f"{where}: retired_at"),
        revoked_at=_parse_time(entry["revoked_at"], f"{where}: revoked_at"),
        public_jwk=_public_jwk(entry["public_jwk"], kid, alg, where),
    )
    stamp = _REQUIRED_STAMP.get(state)
    if stamp is not None and getattr(record, stamp) is None:
        raise ManifestError(f"{where} is {state.value} but has no {stamp}")
    return record


def _public_jwk(value: object, kid: str, alg: Algorithm, where: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ManifestError(f"{where}: public_jwk is not an object of strings")
    extra = sorted(set(value) - set(PUBLIC_MEMBERS))
    if extra:
        # Name the members only: their values may be private key material.
        raise ManifestError(f"{where}: public_jwk has non-public members {extra}")
    if value.get("kid") != kid or value.get("alg") != alg.value:
        raise ManifestError(f"{where}: public_jwk kid/alg differ from the record's")
    try:
        key = import_jwk(value)
        check_key_matches_alg(key, alg)
    except KeysError as exc:
        raise ManifestError(f"{where}: public_jwk is not a valid {alg.value} key ({exc})") from exc
    if key.thumbprint() != kid:
        raise ManifestError(f"{where}: kid is not the RFC 7638 thumbprint of its public_jwk")
    return dict(value)


_E = TypeVar("_E", Algorithm, KeyState)


def _enum(kind: type[_E], value: object, where: str) -> _E:
    if isinstance(value, str):
        try:
            return kind(value)
        except ValueError:
            pass
    allowed = ", ".join(member.value for member in kind)
    raise ManifestError(f"{where} is {value!r}; expected one of {allowed}")


def _format_time(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _required_time(value: object, where: str) -> datetime:
    parsed = _parse_time(value, where)
    if parsed is None:
        raise ManifestError(f"{where} is missing")
    return parsed


def _parse_time(value: object, where: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ManifestError(f"{where} is not an ISO-8601 string")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ManifestError(f"{where} is not an ISO-8601 timestamp: {value!r}") from None
    if parsed.tzinfo is None:
        raise ManifestError(f"{where} has no time zone: {value!r}")
    return parsed.astimezone(UTC)
