"""Public JWKs, thumbprints and the JWKS document."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from keys.errors import KeysError
from keys.jwk import (
    PUBLIC_MEMBERS,
    generate_key,
    import_jwk,
    jwks_document,
    public_jwk,
    thumbprint,
)
from keys.model import Algorithm, KeyState
from tests.keys.fakes import record

# RFC 7638 section 3.1: the worked example and its thumbprint.
RFC7638_JWK = {
    "kty": "RSA",
    "n": (
        "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSo"
        "c_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YG"
        "jQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdk"
        "t-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnq"
        "DKgw"
    ),
    "e": "AQAB",
    "alg": "RS256",
    "kid": "2011-04-29",
}
RFC7638_THUMBPRINT = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"

PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_thumbprint_matches_rfc7638_example() -> None:
    """The kid of the RFC 7638 example key is the thumbprint the RFC computes."""
    assert thumbprint(RFC7638_JWK) == RFC7638_THUMBPRINT
    assert public_jwk(RFC7638_JWK, Algorithm.RS256)["kid"] == RFC7638_THUMBPRINT


@pytest.mark.parametrize(
    ("alg", "kty", "members"),
    [
        (Algorithm.RS256, "RSA", {"kty", "kid", "use", "alg", "n", "e"}),
        (Algorithm.ES256, "EC", {"kty", "kid", "use", "alg", "crv", "x", "y"}),
    ],
)
def test_public_jwk_has_exactly_the_public_members(
    alg: Algorithm, kty: str, members: set[str]
) -> None:
    """A generated key projects to its public members plus kid, use=sig and alg."""
    key = generate_key(alg)
    jwk = public_jwk(key, alg)
    assert set(jwk) == members
    assert jwk["kty"] == kty
    assert jwk["use"] == "sig"
    assert jwk["alg"] == alg.value
    assert jwk["kid"] == key.thumbprint()


@pytest.mark.parametrize(("alg", "count"), [(Algorithm.RS256, 4), (Algorithm.ES256, 40)])
def test_no_private_member_survives_any_projection(alg: Algorithm, count: int) -> None:
    """For many private keys, given as objects or as private dicts with junk added, neither
    public_jwk nor jwks_document emits anything outside the allow-list."""
    records = []
    for i in range(count):
        key = generate_key(alg)
        private = {k: v for k, v in key.as_dict(private=True).items() if isinstance(v, str)}
        assert PRIVATE_MEMBERS & set(private)  # the input really is private
        private.update(k="c2VjcmV0", foo="bar")
        for source in (key, private):
            jwk = public_jwk(source, alg)
            assert set(jwk) <= set(PUBLIC_MEMBERS)
            assert not PRIVATE_MEMBERS & set(jwk)
        # Hand jwks_document the private dict itself, as a careless caller might.
        records.append(
            record(key.thumbprint(), KeyState.ACTIVE, T0 + timedelta(seconds=i), public_jwk=private)
        )
    for entry in json.loads(jwks_document(records))["keys"]:
        assert set(entry) <= set(PUBLIC_MEMBERS)


def test_jwks_document_drops_a_tampered_private_member() -> None:
    """A record whose public_jwk was tampered to include "d" is published without it."""
    key = generate_key(Algorithm.ES256)
    tampered = {**public_jwk(key, Algorithm.ES256), "d": "c2VjcmV0"}
    document = jwks_document([record(key.thumbprint(), KeyState.ACTIVE, T0, public_jwk=tampered)])
    assert b'"d"' not in document
    assert b"c2VjcmV0" not in document


def test_jwks_document_publishes_only_published_states_in_stable_order() -> None:
    """Revoked keys are left out; the rest come oldest first, ties broken by kid, compactly."""
    records = [
        record("c", KeyState.PENDING, T0 + timedelta(hours=2), public_jwk={"kid": "c"}),
        record("b", KeyState.ACTIVE, T0, public_jwk={"kid": "b"}),
        record("a", KeyState.RETIRED, T0, public_jwk={"kid": "a"}),
        record("z", KeyState.REVOKED, T0 - timedelta(days=1), public_jwk={"kid": "z"}),
    ]
    document = jwks_document(records)
    assert document == b'{"keys":[{"kid":"a"},{"kid":"b"},{"kid":"c"}]}'
    assert jwks_document(list(reversed(records))) == document


def test_jwks_document_sorts_members() -> None:
    """Members inside each key are sorted, so the same keys always give the same bytes."""
    key = generate_key(Algorithm.ES256)
    document = jwks_document(
        [record(key.thumbprint(), KeyState.ACTIVE, T0, public_jwk=public_jwk(key, Algorithm.ES256))]
    )
    (entry,) = json.loads(document)["keys"]
    assert list(entry) == sorted(entry)


@pytest.mark.parametrize(
    ("alg", "other"), [(Algorithm.RS256, Algorithm.ES256), (Algorithm.ES256, Algorithm.RS256)]
)
def test_public_jwk_rejects_a_key_of_the_wrong_type(alg: Algorithm, other: Algorithm) -> None:
    """An EC key cannot be published as RS256, nor an RSA key as ES256."""
    with pytest.raises(KeysError):
        public_jwk(generate_key(other), alg)


@pytest.mark.parametrize("jwk", [{"kty": "oct", "k": "c2VjcmV0"}, {"kty": "RSA", "n": "!"}, {}])
def test_import_jwk_rejects_unusable_keys_without_echoing_them(jwk: dict[str, str]) -> None:
    """Symmetric, malformed and typeless JWKs raise KeysError that does not quote the key."""
    with pytest.raises(KeysError) as caught:
        import_jwk(jwk)
    assert "c2VjcmV0" not in str(caught.value)
