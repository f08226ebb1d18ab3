"""Broker settings: validated at startup, errors name the variable."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from broker.settings import BrokerSettings, validate_sandbox_url
from issuer.errors import ConfigError


def settings(tmp_path: Path, **env: str) -> BrokerSettings:
    return BrokerSettings.from_env(env, data_dir=tmp_path)


def test_defaults(tmp_path: Path) -> None:
    """Without settings: sandbox listener on 8083, 20/30-minute floor and refresh, no TLS."""
    s = settings(tmp_path)
    assert s.sandbox_url == "http://127.0.0.1:8083/v1/credentials"
    assert s.credential_floor == timedelta(minutes=20)
    assert s.refresh_ahead == timedelta(minutes=30)
    assert s.sts_endpoint is None
    assert s.imds_endpoint == "http://169.254.169.254"
    assert s.internal_tls is None
    assert s.sandbox_tls is None


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8083/v1/credentials",
        "http://localhost/x",
        "http://[::1]:9/x",
        "http://169.254.170.2/v1/credentials",
        "http://169.254.170.23/v1/credentials",
        "http://[fd00:ec2::23]/v1/credentials",
        "https://broker.internal/v1/credentials",
    ],
)
def test_sdk_accepted_sandbox_urls(url: str) -> None:
    """Loopback, the ECS/EKS link-local addresses, and any https host are accepted."""
    validate_sandbox_url(url)


@pytest.mark.parametrize(
    "url",
    ["http://broker:8083/v1/credentials", "http://10.0.0.5/v1/credentials", "ftp://127.0.0.1/x"],
)
def test_urls_sdks_refuse_are_refused_here(url: str) -> None:
    """A plain-http URL to a host SDKs refuse fails at startup, naming the variable."""
    with pytest.raises(ConfigError, match="WARRANT_SANDBOX_URL"):
        validate_sandbox_url(url)


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"WARRANT_CREDENTIAL_FLOOR": "30m"}, "WARRANT_CREDENTIAL_REFRESH_AHEAD"),
        ({"WARRANT_CREDENTIAL_FLOOR": "0"}, "WARRANT_CREDENTIAL_FLOOR"),
        ({"WARRANT_SANDBOX_TLS_CERT": "/etc/hostname"}, "WARRANT_SANDBOX_TLS_KEY"),
        (
            {"WARRANT_INTERNAL_TLS_CERT": "/nope", "WARRANT_INTERNAL_TLS_KEY": "/nope"},
            "WARRANT_INTERNAL_TLS_CERT",
        ),
        ({"WARRANT_STS_ENDPOINT": "sts.local"}, "WARRANT_STS_ENDPOINT"),
        ({"WARRANT_SANDBOX_DEFAULT_TTL": "2d"}, "WARRANT_SANDBOX_DEFAULT_TTL"),
        ({"WARRANT_SANDBOX_ADDR": "nowhere"}, "WARRANT_SANDBOX_ADDR"),
        ({"WARRANT_GRPC_ADDR": "8082"}, "WARRANT_GRPC_ADDR"),
        ({"WARRANT_GRPC_ADDR": "127.0.0.1:8081"}, "WARRANT_INTERNAL_ADDR"),
        (
            {"WARRANT_GRPC_ADDR": "127.0.0.1:9000", "WARRANT_SANDBOX_ADDR": "127.0.0.1:9000"},
            "WARRANT_SANDBOX_ADDR",
        ),
        ({"WARRANT_GRPC_TLS_KEY": "/etc/hostname"}, "WARRANT_GRPC_TLS_CERT"),
        ({"WARRANT_GRPC_TLS_CLIENT_CA": "/etc/hostname"}, "WARRANT_GRPC_TLS_CERT"),
    ],
)
def test_bad_settings_name_the_variable(tmp_path: Path, env: dict[str, str], variable: str) -> None:
    """Contradictory or malformed broker settings fail at startup naming the variable."""
    with pytest.raises(ConfigError, match=variable):
        settings(tmp_path, **env)


def test_grpc_defaults_and_off(tmp_path: Path) -> None:
    """gRPC listens on 127.0.0.1:8082 in plaintext by default; WARRANT_GRPC_ADDR=off disables
    it; a client CA turns on mTLS and must exist."""
    grpc = settings(tmp_path).grpc
    assert grpc is not None
    assert (str(grpc.addr), grpc.tls, grpc.client_ca) == ("127.0.0.1:8082", None, None)
    assert settings(tmp_path, WARRANT_GRPC_ADDR="off").grpc is None
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_text("x")
    key.write_text("x")
    tls = {"WARRANT_GRPC_TLS_CERT": str(cert), "WARRANT_GRPC_TLS_KEY": str(key)}
    mtls = settings(tmp_path, WARRANT_GRPC_TLS_CLIENT_CA=str(cert), **tls).grpc
    assert mtls is not None
    assert mtls.client_ca == cert
    with pytest.raises(ConfigError, match="WARRANT_GRPC_TLS_CLIENT_CA"):
        settings(tmp_path, WARRANT_GRPC_TLS_CLIENT_CA=str(tmp_path / "none.pem"), **tls)


def test_tls_makes_the_default_sandbox_url_https(tmp_path: Path) -> None:
    """With sandbox TLS configured, the URL handed to sandboxes defaults to https."""
    cert = tmp_path / "c.pem"
    key = tmp_path / "k.pem"
    cert.write_text("x")
    key.write_text("x")
    s = settings(tmp_path, WARRANT_SANDBOX_TLS_CERT=str(cert), WARRANT_SANDBOX_TLS_KEY=str(key))
    assert s.sandbox_url == "https://127.0.0.1:8083/v1/credentials"
