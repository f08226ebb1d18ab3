"""The broker's settings: one frozen object from the environment, validated at startup; every
error names the variable to change."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

from issuer.errors import ConfigError
from issuer.settings import Address, TlsFiles, parse_address, parse_duration

log = logging.getLogger(__name__)

# Never vend credentials with less than this left: boto3 starts refreshing 15 minutes before
# expiry and blocks every call at 10, so anything shorter turns into a refresh storm.
DEFAULT_CREDENTIAL_FLOOR = timedelta(minutes=20)
# Start refreshing a cached session this long before expiry, so the floor is never reached
# while STS answers; the gap (10 min) is how long an STS outage can last without a 503.
DEFAULT_REFRESH_AHEAD = timedelta(minutes=30)
# Sandboxes live an hour unless asked; a day at most (an agent run longer than that is a bug).
DEFAULT_SANDBOX_TTL = timedelta(hours=1)
MAX_SANDBOX_TTL = timedelta(hours=24)
MIN_SANDBOX_TTL = timedelta(minutes=1)
# A sandbox deleted in another process (another replica) stops authenticating within this.
SANDBOX_AUTH_CACHE_TTL = timedelta(seconds=2)
# Hosts AWS SDKs accept for AWS_CONTAINER_CREDENTIALS_FULL_URI over plain http (botocore's
# ContainerMetadataFetcher; the Rust and JS SDKs agree). Anything else needs https.
# The other listeners' settings and defaults, which the gRPC address must not collide with.
LISTENER_DEFAULTS = {
    "WARRANT_PUBLIC_ADDR": "127.0.0.1:8080",
    "WARRANT_INTERNAL_ADDR": "127.0.0.1:8081",
    "WARRANT_SANDBOX_ADDR": "127.0.0.1:8083",
}
SDK_HTTP_HOSTS = frozenset({"localhost", "169.254.170.2", "169.254.170.23", "fd00:ec2::23"})


@dataclass(frozen=True, slots=True)
class BrokerSettings:
    sandbox_addr: Address
    sandbox_url: str  # what AWS_CONTAINER_CREDENTIALS_FULL_URI points at
    sts_endpoint: str | None
    aws_endpoint: str | None  # where test-connection probes go (the local stand-in); None: AWS
    imds_endpoint: str
    credential_floor: timedelta
    refresh_ahead: timedelta
    sandbox_default_ttl: timedelta
    sandbox_max_ttl: timedelta
    internal_tls: TlsFiles | None
    sandbox_tls: TlsFiles | None
    grpc: GrpcSettings | None = None  # None: WARRANT_GRPC_ADDR=off

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, data_dir: Path) -> BrokerSettings:
        sandbox_addr = parse_address(env, "WARRANT_SANDBOX_ADDR", "127.0.0.1:8083")
        sandbox_tls = _tls(env, "WARRANT_SANDBOX_TLS_CERT", "WARRANT_SANDBOX_TLS_KEY")
        scheme = "https" if sandbox_tls else "http"
        sandbox_url = env.get("WARRANT_SANDBOX_URL") or (
            f"{scheme}://{sandbox_addr}/v1/credentials"
        )
        validate_sandbox_url(sandbox_url)
        floor = parse_duration(env, "WARRANT_CREDENTIAL_FLOOR", DEFAULT_CREDENTIAL_FLOOR)
        ahead = parse_duration(env, "WARRANT_CREDENTIAL_REFRESH_AHEAD", DEFAULT_REFRESH_AHEAD)
        if floor <= timedelta(0):
            raise ConfigError("WARRANT_CREDENTIAL_FLOOR must be positive")
        if ahead <= floor:
            raise ConfigError(
                "WARRANT_CREDENTIAL_REFRESH_AHEAD must be longer than WARRANT_CREDENTIAL_FLOOR: "
                "a session is refreshed before it gets too short to vend"
            )
        if floor < timedelta(minutes=15):
            log.warning(
                "WARRANT_CREDENTIAL_FLOOR is %ss: AWS SDKs refresh credentials with less than "
                "15 minutes left on every call; use this only for tests",
                int(floor.total_seconds()),
            )
        default_ttl = parse_duration(env, "WARRANT_SANDBOX_DEFAULT_TTL", DEFAULT_SANDBOX_TTL)
        max_ttl = parse_duration(env, "WARRANT_SANDBOX_MAX_TTL", MAX_SANDBOX_TTL)
        if not MIN_SANDBOX_TTL <= default_ttl <= max_ttl:
            raise ConfigError(
                "WARRANT_SANDBOX_DEFAULT_TTL must be between 60 s and WARRANT_SANDBOX_MAX_TTL"
            )
        sts_endpoint = env.get("WARRANT_STS_ENDPOINT") or None
        if sts_endpoint is not None:
            _require_url(sts_endpoint, "WARRANT_STS_ENDPOINT")
        aws_endpoint = env.get("WARRANT_AWS_ENDPOINT") or None
        if aws_endpoint is not None:
            _require_url(aws_endpoint, "WARRANT_AWS_ENDPOINT")
        imds_endpoint = env.get("WARRANT_IMDS_ENDPOINT") or "http://169.254.169.254"
        _require_url(imds_endpoint, "WARRANT_IMDS_ENDPOINT")
        return cls(
            sandbox_addr=sandbox_addr,
            sandbox_url=sandbox_url,
            sts_endpoint=sts_endpoint,
            aws_endpoint=aws_endpoint,
            imds_endpoint=imds_endpoint.rstrip("/"),
            credential_floor=floor,
            refresh_ahead=ahead,
            sandbox_default_ttl=default_ttl,
            sandbox_max_ttl=max_ttl,
            internal_tls=_tls(env, "WARRANT_INTERNAL_TLS_CERT", "WARRANT_INTERNAL_TLS_KEY"),
            sandbox_tls=sandbox_tls,
            grpc=GrpcSettings.from_env(env),
        )


@dataclass(frozen=True, slots=True)
class GrpcSettings:
    """The gRPC API on its own internal address (agents and operators, like the internal
    listener); optional TLS, and mTLS when a client CA is given."""

    addr: Address
    tls: TlsFiles | None
    client_ca: Path | None  # set: clients must present a certificate signed by this CA

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> GrpcSettings | None:
        if env.get("WARRANT_GRPC_ADDR", "").strip().lower() == "off":
            return None
        addr = parse_address(env, "WARRANT_GRPC_ADDR", "127.0.0.1:8082")
        for other, default in LISTENER_DEFAULTS.items():
            if parse_address(env, other, default) == addr:
                raise ConfigError(f"WARRANT_GRPC_ADDR and {other} must differ (both {addr})")
        tls = _tls(env, "WARRANT_GRPC_TLS_CERT", "WARRANT_GRPC_TLS_KEY")
        ca_value = env.get("WARRANT_GRPC_TLS_CLIENT_CA") or None
        client_ca = None
        if ca_value is not None:
            if tls is None:
                raise ConfigError(
                    "WARRANT_GRPC_TLS_CLIENT_CA (mTLS) needs WARRANT_GRPC_TLS_CERT and "
                    "WARRANT_GRPC_TLS_KEY: the server must present a certificate too"
                )
            client_ca = Path(ca_value)
            if not client_ca.is_file():
                raise ConfigError(f"WARRANT_GRPC_TLS_CLIENT_CA={ca_value!r}: no such file")
        return cls(addr, tls, client_ca)


def validate_sandbox_url(url: str) -> None:
    """AWS SDKs refuse a plain-http container-credentials URL unless its host is loopback or
    one of the ECS/EKS link-local addresses; catch that here rather than in every sandbox."""
    name = "WARRANT_SANDBOX_URL"
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme != "http" or not parts.hostname:
        raise ConfigError(f"{name}={url!r} must be an http(s) URL")
    host = parts.hostname
    if host in SDK_HTTP_HOSTS:
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    raise ConfigError(
        f"{name}={url!r}: AWS SDKs accept plain http only for loopback (127.0.0.1, ::1, "
        "localhost) or 169.254.170.2, 169.254.170.23, fd00:ec2::23; use one of those (e.g. a "
        "forwarder inside the sandbox's network namespace) or https with "
        "WARRANT_SANDBOX_TLS_CERT/WARRANT_SANDBOX_TLS_KEY"
    )


def _require_url(value: str, name: str) -> None:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{name}={value!r} must be an http(s) URL")


def _tls(env: Mapping[str, str], cert_name: str, key_name: str) -> TlsFiles | None:
    cert, key = env.get(cert_name), env.get(key_name)
    if not cert and not key:
        return None
    if not cert or not key:
        raise ConfigError(f"set both {cert_name} and {key_name}, or neither")
    for name, value in ((cert_name, cert), (key_name, key)):
        if not Path(value).is_file():
            raise ConfigError(f"{name}={value!r}: no such file")
    return TlsFiles(Path(cert), Path(key))
