"""Settings are validated at startup and every error names the variable to change."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from issuer.errors import ConfigError
from issuer.settings import Settings, parse_duration, validate_issuer_url
from keys.model import Algorithm


@pytest.mark.parametrize(
    "url",
    ["https://oidc.example.com", "https://example.com/tenants/oidc", "https://a.b"],
)
def test_valid_issuer_urls(url: str) -> None:
    """https URLs without port, trailing slash, query or fragment are accepted."""
    validate_issuer_url(url, dev=False)


@pytest.mark.parametrize(
    ("url", "dev", "fragment"),
    [
        ("https://oidc.example.com/", False, "must not end with '/'"),
        ("https://oidc.example.com:8443", False, "must not contain a port"),
        ("https://oidc.example.com?x=1", False, "no query string"),
        ("https://oidc.example.com#frag", False, "no query string or fragment"),
        ("http://oidc.example.com", False, "must use https"),
        ("http://127.0.0.1:8080", False, "only with WARRANT_DEV=1"),
        ("http://oidc.example.com", True, "must use https"),
        ("ftp://oidc.example.com", False, "must be an https URL"),
        ("https://", False, "has no host"),
        ("https://user:pw@oidc.example.com", False, "user information"),
        (" https://oidc.example.com", False, "whitespace"),
        ("https://e.com/" + "a" * 250, False, "at most 255"),
    ],
)
def test_invalid_issuer_urls(url: str, dev: bool, fragment: str) -> None:
    """Each way an issuer URL can differ from what IAM registers is refused with the rule."""
    with pytest.raises(ConfigError, match="WARRANT_ISSUER_URL") as info:
        validate_issuer_url(url, dev=dev)
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8080", "http://localhost:9000", "http://[::1]:1"]
)
def test_dev_mode_allows_loopback_http(url: str) -> None:
    """Plain http is allowed for loopback addresses only when dev mode is on."""
    validate_issuer_url(url, dev=True)


def test_defaults(tmp_path: Path) -> None:
    """With only an issuer URL, every other setting has its documented default."""
    s = Settings.from_env(
        {"WARRANT_ISSUER_URL": "https://oidc.example.com", "WARRANT_DATA_DIR": str(tmp_path)}
    )
    assert str(s.public_addr) == "127.0.0.1:8080"
    assert str(s.internal_addr) == "127.0.0.1:8081"
    assert s.key_alg is Algorithm.RS256
    assert s.policy.jwks_max_age == timedelta(seconds=300)
    assert s.policy.publish_ahead == timedelta(hours=1)
    assert s.policy.rotation_period == timedelta(days=7)
    assert s.token_default_ttl == timedelta(seconds=300)
    assert s.token_max_ttl == timedelta(seconds=3600)
    assert s.database_url == f"sqlite+aiosqlite:///{tmp_path / 'warrant.db'}"
    assert s.keys_dir == tmp_path / "keys"
    assert s.jwks_uri == "https://oidc.example.com/.well-known/jwks.json"
    assert not s.dev


def test_dev_mode_defaults_issuer_to_public_listener(tmp_path: Path) -> None:
    """In dev mode the issuer URL defaults to the public listener over plain http."""
    s = Settings.from_env(
        {
            "WARRANT_DEV": "1",
            "WARRANT_PUBLIC_ADDR": "127.0.0.1:9090",
            "WARRANT_DATA_DIR": str(tmp_path),
        }
    )
    assert s.issuer_url == "http://127.0.0.1:9090"


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({}, "WARRANT_ISSUER_URL is required"),
        ({"WARRANT_KEY_ALG": "HS256"}, "WARRANT_KEY_ALG"),
        ({"WARRANT_JWKS_MAX_AGE": "0"}, "WARRANT_JWKS_MAX_AGE"),
        ({"WARRANT_JWKS_MAX_AGE": "2h"}, "WARRANT_KEY_PUBLISH_AHEAD"),
        ({"WARRANT_KEY_PUBLISH_AHEAD": "60"}, "WARRANT_KEY_PUBLISH_AHEAD"),
        ({"WARRANT_KEY_ROTATION_PERIOD": "30m"}, "WARRANT_KEY_ROTATION_PERIOD"),
        ({"WARRANT_TOKEN_DEFAULT_TTL": "2h"}, "WARRANT_TOKEN_DEFAULT_TTL"),
        ({"WARRANT_TOKEN_DEFAULT_TTL": "10"}, "WARRANT_TOKEN_DEFAULT_TTL"),
        ({"WARRANT_TOKEN_MAX_TTL": "2d"}, "WARRANT_TOKEN_MAX_TTL"),
        ({"WARRANT_JWKS_MAX_AGE": "five"}, "WARRANT_JWKS_MAX_AGE"),
        ({"WARRANT_DEV": "maybe"}, "WARRANT_DEV"),
        ({"WARRANT_PUBLIC_ADDR": "nowhere"}, "WARRANT_PUBLIC_ADDR"),
        ({"WARRANT_PUBLIC_ADDR": "127.0.0.1:70000"}, "WARRANT_PUBLIC_ADDR"),
        ({"WARRANT_PUBLIC_ADDR": "127.0.0.1:8081"}, "WARRANT_INTERNAL_ADDR must differ"),
    ],
)
def test_bad_settings_name_the_variable(tmp_path: Path, env: dict[str, str], variable: str) -> None:
    """A bad or contradictory value fails at startup with a message naming the variable."""
    full = {
        "WARRANT_ISSUER_URL": "https://oidc.example.com",
        "WARRANT_DATA_DIR": str(tmp_path),
        **env,
    }
    if not env:
        full.pop("WARRANT_ISSUER_URL")
    with pytest.raises(ConfigError, match=variable):
        Settings.from_env(full)


def test_storage_commands_do_not_need_an_issuer(tmp_path: Path) -> None:
    """Commands that only touch storage (tenants, keys) run without WARRANT_ISSUER_URL."""
    s = Settings.from_env({"WARRANT_DATA_DIR": str(tmp_path)}, require_issuer=False)
    assert s.issuer_url == ""


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [("90", 90), ("90s", 90), ("5m", 300), ("1h", 3600), ("7d", 604800), (" 2 h ", 7200)],
)
def test_duration_units(raw: str, seconds: int) -> None:
    """Durations accept whole seconds or a unit suffix."""
    assert parse_duration({"X": raw}, "X", timedelta(0)) == timedelta(seconds=seconds)


def test_repr_never_shows_the_database_password(tmp_path: Path) -> None:
    """A database URL may carry a password: the settings' repr leaves it out."""
    s = Settings.from_env(
        {
            "WARRANT_ISSUER_URL": "https://oidc.example.com",
            "WARRANT_DATA_DIR": str(tmp_path),
            "WARRANT_DATABASE_URL": "postgresql+asyncpg://w:s3cret@db/warrant",
        }
    )
    assert "s3cret" not in repr(s)
    assert s.database_url.endswith("@db/warrant")
