"""The issuer's settings: one frozen object built once from the environment, validated at start.

Every error names the environment variable to change.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

from issuer.db import PoolSettings
from issuer.errors import ConfigError
from keys.errors import KeysError, PolicyError
from keys.model import (
    DEFAULT_JWKS_MAX_AGE,
    DEFAULT_MAX_TOKEN_TTL,
    DEFAULT_PUBLISH_AHEAD,
    DEFAULT_RELOAD_INTERVAL,
    DEFAULT_ROTATION_PERIOD,
    Algorithm,
    RotationPolicy,
)
from keys.sealed import KeyEncryptionKey

# IAM's limit on an OIDC provider URL (CreateOpenIDConnectProvider.Url).
MAX_ISSUER_URL_LENGTH = 255
# A minted token lives 5 minutes unless the caller asks otherwise (as GitHub's OIDC tokens do):
# it is exchanged with STS at once, so a short life limits what a leaked token is worth.
DEFAULT_TOKEN_TTL = timedelta(seconds=300)
# Below a minute a token may expire on its way to STS.
MIN_TOKEN_TTL = timedelta(seconds=60)
# How often the running service rotates and prunes keys on schedule.
DEFAULT_MAINTENANCE_INTERVAL = timedelta(seconds=60)
# A tenant removed by another process stays mintable here for at most this long.
DEFAULT_TENANT_CACHE_TTL = timedelta(seconds=5)
# Database pool bounds. Each process holds up to size + overflow PostgreSQL connections, and the
# server's default max_connections is 100: past 100 per process is a typo, not a plan.
MAX_POOL_CONNECTIONS = 100
# Under a second, a checkout fails on an ordinary burst; past 5 minutes nobody is still waiting.
MIN_POOL_TIMEOUT = timedelta(seconds=1)
MAX_POOL_TIMEOUT = timedelta(minutes=5)
# Recycling more often than every minute would reconnect constantly.
MIN_POOL_RECYCLE = timedelta(minutes=1)

# S3's bucket naming rules: 3-63 lowercase letters, digits, dots and hyphens, starting and
# ending with a letter or digit.
_S3_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_DURATION = re.compile(r"^\s*(\d+)\s*([smhd]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


@dataclass(frozen=True, slots=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class TlsFiles:
    cert: Path
    key: Path


@dataclass(frozen=True, slots=True)
class PublishTarget:
    """Where the service copies discovery and JWKS after every key-set change."""

    bucket: str
    prefix: str | None  # None: the issuer URL's path; "" the bucket root


class KeyStoreKind(enum.StrEnum):
    FILE = "file"  # $WARRANT_DATA_DIR/keys: one host
    DATABASE = "database"  # the shared database, private keys sealed under the KEK
    KMS = "kms"  # records in the shared database, private keys in AWS KMS


@dataclass(frozen=True, slots=True)
class KeyStoreSettings:
    """WARRANT_KEY_STORE and what it needs. The KEK's repr shows only its id."""

    kind: KeyStoreKind = KeyStoreKind.FILE
    kms_region: str | None = None  # WARRANT_KMS_REGION
    kms_endpoint: str | None = None  # WARRANT_KMS_ENDPOINT: moto in the tests
    key_encryption_key: KeyEncryptionKey | None = field(default=None, repr=False)

    @property
    def shared(self) -> bool:
        """Keys in the shared database: replicas share them, and maintenance takes turns."""
        return self.kind is not KeyStoreKind.FILE


@dataclass(frozen=True, slots=True)
class Settings:
    issuer_url: str
    dev: bool
    public_addr: Address
    internal_addr: Address
    data_dir: Path
    database_url: str = field(repr=False)  # may carry a password
    database_pool: PoolSettings
    database_auto_migrate: bool
    key_alg: Algorithm
    policy: RotationPolicy
    token_default_ttl: timedelta
    maintenance_interval: timedelta
    tenant_cache_ttl: timedelta
    audit_path: Path
    publish: PublishTarget | None = None  # WARRANT_PUBLISH_S3_BUCKET / _PREFIX
    aws_endpoint: str | None = None  # WARRANT_AWS_ENDPOINT: S3 for publishing; None: AWS
    key_store: KeyStoreSettings = field(default_factory=KeyStoreSettings)

    @property
    def keys_dir(self) -> Path:
        return self.data_dir / "keys"

    @property
    def token_max_ttl(self) -> timedelta:
        return self.policy.max_token_ttl

    @property
    def jwks_uri(self) -> str:
        return f"{self.issuer_url}/.well-known/jwks.json"

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, require_issuer: bool = True) -> Settings:
        """`require_issuer=False` is for commands that only touch storage (tenants, keys)."""
        dev = parse_bool(env, "WARRANT_DEV", default=False)
        public_addr = parse_address(env, "WARRANT_PUBLIC_ADDR", "127.0.0.1:8080")
        internal_addr = parse_address(env, "WARRANT_INTERNAL_ADDR", "127.0.0.1:8081")
        if public_addr == internal_addr:
            raise ConfigError(
                "WARRANT_PUBLIC_ADDR and WARRANT_INTERNAL_ADDR must differ: the "
                "public listener must never expose minting"
            )
        default_issuer = f"http://{public_addr}" if dev else None
        issuer_url = env.get("WARRANT_ISSUER_URL", "") or default_issuer
        if issuer_url is None and not require_issuer:
            issuer_url = ""
        elif issuer_url is None:
            raise ConfigError(
                "WARRANT_ISSUER_URL is required: the public https URL at which AWS "
                "reaches /.well-known/openid-configuration (e.g. "
                "https://oidc.example.com), or set WARRANT_DEV=1 for local use"
            )
        if issuer_url:
            validate_issuer_url(issuer_url, dev=dev)
        data_dir = Path(env.get("WARRANT_DATA_DIR") or "./var").resolve()
        database_url = env.get("WARRANT_DATABASE_URL") or (
            f"sqlite+aiosqlite:///{data_dir / 'warrant.db'}"
        )
        alg_name = env.get("WARRANT_KEY_ALG", "RS256")
        try:
            key_alg = Algorithm(alg_name)
        except ValueError:
            raise ConfigError(
                f"WARRANT_KEY_ALG={alg_name!r} is not supported; use RS256 (default) or ES256"
            ) from None
        max_ttl = parse_duration(env, "WARRANT_TOKEN_MAX_TTL", DEFAULT_MAX_TOKEN_TTL)
        policy = RotationPolicy(
            publish_ahead=parse_duration(env, "WARRANT_KEY_PUBLISH_AHEAD", DEFAULT_PUBLISH_AHEAD),
            rotation_period=parse_duration(
                env, "WARRANT_KEY_ROTATION_PERIOD", DEFAULT_ROTATION_PERIOD
            ),
            jwks_max_age=parse_duration(env, "WARRANT_JWKS_MAX_AGE", DEFAULT_JWKS_MAX_AGE),
            max_token_ttl=max_ttl,
            reload_interval=parse_duration(
                env, "WARRANT_KEY_RELOAD_INTERVAL", DEFAULT_RELOAD_INTERVAL
            ),
        )
        try:
            policy.validate()
        except PolicyError as exc:
            raise ConfigError(str(exc)) from exc
        default_ttl = parse_duration(env, "WARRANT_TOKEN_DEFAULT_TTL", DEFAULT_TOKEN_TTL)
        if not MIN_TOKEN_TTL <= default_ttl <= max_ttl:
            raise ConfigError(
                f"WARRANT_TOKEN_DEFAULT_TTL must be between {_secs(MIN_TOKEN_TTL)}s and "
                f"WARRANT_TOKEN_MAX_TTL ({_secs(max_ttl)}s)"
            )
        if max_ttl > timedelta(hours=24):
            raise ConfigError("WARRANT_TOKEN_MAX_TTL must be at most 24h (86400s)")
        return cls(
            issuer_url=issuer_url,
            dev=dev,
            public_addr=public_addr,
            internal_addr=internal_addr,
            data_dir=data_dir,
            database_url=database_url,
            database_pool=parse_pool(env),
            database_auto_migrate=parse_bool(env, "WARRANT_DATABASE_AUTO_MIGRATE", default=True),
            key_alg=key_alg,
            policy=policy,
            token_default_ttl=default_ttl,
            maintenance_interval=parse_duration(
                env, "WARRANT_KEY_MAINTENANCE_INTERVAL", DEFAULT_MAINTENANCE_INTERVAL
            ),
            tenant_cache_ttl=DEFAULT_TENANT_CACHE_TTL,
            audit_path=Path(env.get("WARRANT_AUDIT_LOG") or data_dir / "audit.jsonl"),
            publish=parse_publish_target(env),
            aws_endpoint=parse_endpoint(env, "WARRANT_AWS_ENDPOINT"),
            key_store=parse_key_store(env),
        )


def validate_issuer_url(url: str, *, dev: bool) -> None:
    """The URL must be byte-identical to the IAM provider URL, the discovery `issuer` and every
    token's `iss`: https, no trailing slash, no query or fragment, no port, at most 255 chars.
    Plain http to a loopback address is allowed only in dev mode."""
    name = "WARRANT_ISSUER_URL"
    if len(url) > MAX_ISSUER_URL_LENGTH:
        raise ConfigError(f"{name} is {len(url)} chars; IAM allows at most 255")
    if url != url.strip():
        raise ConfigError(f"{name} has leading or trailing whitespace")
    parts = urlsplit(url)
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        raise ConfigError(f"{name}={url!r} must have no query string or fragment")
    if not parts.hostname:
        raise ConfigError(f"{name}={url!r} has no host")
    if url.endswith("/"):
        raise ConfigError(
            f"{name}={url!r} must not end with '/': iss, the discovery issuer and the IAM "
            f"provider URL must be byte-identical; use {url.rstrip('/')!r}"
        )
    if parts.username or parts.password:
        raise ConfigError(f"{name} must not contain user information")
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(f"{name}={url!r} has an invalid port") from None
    if parts.scheme == "https":
        if port is not None:
            raise ConfigError(
                f"{name}={url!r} must not contain a port: AWS expects the "
                "provider on the default https port 443"
            )
        return
    if parts.scheme == "http" and dev and _is_loopback(parts.hostname):
        return
    if parts.scheme == "http":
        raise ConfigError(
            f"{name}={url!r} must use https; plain http to 127.0.0.1 is allowed "
            "only with WARRANT_DEV=1 (local development)"
        )
    raise ConfigError(f"{name}={url!r} must be an https URL")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_bool(env: Mapping[str, str], name: str, *, default: bool) -> bool:
    raw = env.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean; use 1 or 0")


def parse_pool(env: Mapping[str, str]) -> PoolSettings:
    """WARRANT_DATABASE_POOL_SIZE, _MAX_OVERFLOW, _TIMEOUT and _RECYCLE."""
    default = PoolSettings()
    timeout = parse_duration(env, "WARRANT_DATABASE_POOL_TIMEOUT", default.timeout)
    if not MIN_POOL_TIMEOUT <= timeout <= MAX_POOL_TIMEOUT:
        raise ConfigError(
            f"WARRANT_DATABASE_POOL_TIMEOUT must be between {_secs(MIN_POOL_TIMEOUT)}s and "
            f"{_secs(MAX_POOL_TIMEOUT)}s"
        )
    recycle = parse_duration(env, "WARRANT_DATABASE_POOL_RECYCLE", default.recycle)
    if recycle < MIN_POOL_RECYCLE:
        raise ConfigError(
            f"WARRANT_DATABASE_POOL_RECYCLE must be at least {_secs(MIN_POOL_RECYCLE)}s"
        )
    return PoolSettings(
        size=parse_int(env, "WARRANT_DATABASE_POOL_SIZE", default.size, 1, MAX_POOL_CONNECTIONS),
        max_overflow=parse_int(
            env, "WARRANT_DATABASE_POOL_MAX_OVERFLOW", default.max_overflow, 0, MAX_POOL_CONNECTIONS
        ),
        timeout=timeout,
        recycle=recycle,
    )


def parse_int(env: Mapping[str, str], name: str, default: int, minimum: int, maximum: int) -> int:
    """A whole number from `minimum` to `maximum`; unset or empty means `default`."""
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    text = raw.strip()
    if not text.isdigit() or not minimum <= int(text) <= maximum:
        raise ConfigError(f"{name}={raw!r} must be a whole number from {minimum} to {maximum}")
    return int(text)


def parse_duration(env: Mapping[str, str], name: str, default: timedelta) -> timedelta:
    """Seconds as an integer, or with a unit: 90, 90s, 5m, 1h, 7d."""
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    match = _DURATION.match(raw)
    if not match:
        raise ConfigError(
            f"{name}={raw!r} is not a duration; use whole seconds or a number "
            "with s, m, h or d (e.g. 300, 5m, 1h, 7d)"
        )
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


def parse_address(env: Mapping[str, str], name: str, default: str) -> Address:
    raw = env.get(name) or default
    host, sep, port_text = raw.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(f"{name}={raw!r} must be HOST:PORT, e.g. {default}")
    return Address(host, int(port_text))


def parse_publish_target(env: Mapping[str, str]) -> PublishTarget | None:
    bucket = env.get("WARRANT_PUBLISH_S3_BUCKET") or ""
    prefix = env.get("WARRANT_PUBLISH_S3_PREFIX") or None
    if not bucket:
        if prefix is not None:
            raise ConfigError(
                "WARRANT_PUBLISH_S3_PREFIX is set but WARRANT_PUBLISH_S3_BUCKET is not; "
                "set the bucket too, or unset the prefix"
            )
        return None
    return PublishTarget(
        validate_bucket(bucket, "WARRANT_PUBLISH_S3_BUCKET"),
        normalize_prefix(prefix, "WARRANT_PUBLISH_S3_PREFIX"),
    )


def validate_bucket(bucket: str, name: str) -> str:
    if not _S3_BUCKET.fullmatch(bucket) or ".." in bucket:
        raise ConfigError(
            f"{name}={bucket!r} is not an S3 bucket name: 3-63 lowercase letters, digits, "
            "dots and hyphens, starting and ending with a letter or digit"
        )
    return bucket


def normalize_prefix(prefix: str | None, name: str) -> str | None:
    """None (follow the issuer URL's path) stays None; "/" is the bucket root."""
    if prefix is None:
        return None
    stripped = prefix.strip("/")
    if stripped and any(part in ("", ".", "..") for part in stripped.split("/")):
        raise ConfigError(f"{name}={prefix!r} must not contain empty, '.' or '..' segments")
    return stripped


def parse_endpoint(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name) or None
    if value is not None:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"{name}={value!r} must be an http(s) URL")
    return value


_KMS_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d{1,2}$")
KEK_HELP = (
    "32 random bytes, base64-encoded (44 characters), e.g. from 'openssl rand -base64 32'; keep "
    "it outside the database, in a secret store"
)


def parse_key_store(env: Mapping[str, str]) -> KeyStoreSettings:
    """WARRANT_KEY_STORE, WARRANT_KMS_REGION, WARRANT_KMS_ENDPOINT, WARRANT_KEY_ENCRYPTION_KEY.
    No error ever shows the key-encryption key."""
    raw_kind = env.get("WARRANT_KEY_STORE") or KeyStoreKind.FILE.value
    try:
        kind = KeyStoreKind(raw_kind.strip().lower())
    except ValueError:
        raise ConfigError(
            f"WARRANT_KEY_STORE={raw_kind!r} is not supported; use file (default), database or kms"
        ) from None
    region = (env.get("WARRANT_KMS_REGION") or "").strip() or None
    endpoint = parse_endpoint(env, "WARRANT_KMS_ENDPOINT")
    if kind is not KeyStoreKind.KMS and (region or endpoint):
        name = "WARRANT_KMS_REGION" if region else "WARRANT_KMS_ENDPOINT"
        raise ConfigError(
            f"{name} is set but WARRANT_KEY_STORE is {kind.value}; set WARRANT_KEY_STORE=kms, "
            f"or unset {name}"
        )
    if kind is KeyStoreKind.KMS:
        if region is None:
            raise ConfigError(
                "WARRANT_KEY_STORE=kms needs WARRANT_KMS_REGION, the AWS region of the signing "
                "keys (e.g. us-east-1)"
            )
        if not _KMS_REGION.fullmatch(region):
            raise ConfigError(
                f"WARRANT_KMS_REGION={region!r} is not an AWS region (e.g. us-east-1)"
            )
    kek = _parse_kek(env.get("WARRANT_KEY_ENCRYPTION_KEY") or "")
    if kind is KeyStoreKind.DATABASE and kek is None:
        raise ConfigError(
            "WARRANT_KEY_STORE=database needs WARRANT_KEY_ENCRYPTION_KEY, which encrypts the "
            f"private keys in the database: {KEK_HELP}"
        )
    if kind is KeyStoreKind.FILE and kek is not None:
        raise ConfigError(
            "WARRANT_KEY_ENCRYPTION_KEY is set but WARRANT_KEY_STORE is file, which does not use "
            "it; set WARRANT_KEY_STORE=database, or unset WARRANT_KEY_ENCRYPTION_KEY"
        )
    return KeyStoreSettings(
        kind=kind, kms_region=region, kms_endpoint=endpoint, key_encryption_key=kek
    )


def _parse_kek(raw: str) -> KeyEncryptionKey | None:
    if not raw.strip():
        return None
    try:
        return KeyEncryptionKey.from_base64(raw)
    except KeysError:
        # Never echo the value, nor an error that might quote it.
        raise ConfigError(f"WARRANT_KEY_ENCRYPTION_KEY must be {KEK_HELP}") from None


def _secs(delta: timedelta) -> int:
    return int(delta.total_seconds())
