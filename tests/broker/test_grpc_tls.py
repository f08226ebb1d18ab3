"""The gRPC listener's transport: TLS, mTLS, a taken port, and switching it off."""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc

from broker.rpc.v1 import credential_broker_pb2 as pb
from broker.rpc.v1 import credential_broker_pb2_grpc as pb_grpc
from tests.broker.test_tls import self_signed
from tests.e2e import base_env, cli, free_port, running_warrant

pytestmark = pytest.mark.slow


def client_pair(directory: Path) -> tuple[Path, bytes, bytes]:
    """A client CA (its certificate's path) and a client certificate and key it signed."""
    ca_cert_path, ca_key_path = self_signed(directory)
    ca_cert = x509.load_pem_x509_certificate(ca_cert_path.read_bytes())
    ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "agent-platform")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(hours=1))
        .sign(ca_key, hashes.SHA256())
    )
    pem_key = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return ca_cert_path, cert.public_bytes(serialization.Encoding.PEM), pem_key


def healthy(channel: grpc.Channel) -> bool:
    check: Any = health_pb2_grpc.HealthStub(channel).Check  # type: ignore[attr-defined]
    try:
        answer = check(health_pb2.HealthCheckRequest(), timeout=5)
    except grpc.RpcError:
        return False
    return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)


def test_tls_and_mtls(tmp_path: Path) -> None:
    """With a certificate, key and client CA set, gRPC speaks only TLS and accepts only clients
    with a certificate from that CA; the API behind it is the same."""
    server_dir, client_dir = tmp_path / "server", tmp_path / "client"
    server_dir.mkdir()
    client_dir.mkdir()
    cert, key = self_signed(server_dir)
    client_ca, client_cert, client_key = client_pair(client_dir)
    with running_warrant(
        tmp_path / "var",
        WARRANT_GRPC_TLS_CERT=str(cert),
        WARRANT_GRPC_TLS_KEY=str(key),
        WARRANT_GRPC_TLS_CLIENT_CA=str(client_ca),
    ) as server:
        target = server.grpc_target
        root = cert.read_bytes()
        with grpc.secure_channel(
            target, grpc.ssl_channel_credentials(root, client_key, client_cert)
        ) as channel:
            assert healthy(channel)
            stub = pb_grpc.CredentialBrokerStub(channel)
            metadata = (("authorization", server.key("agent")["Authorization"]),)
            with pytest.raises(grpc.RpcError) as caught:
                stub.MintToken(pb.MintTokenRequest(tenant="nobody"), metadata=metadata, timeout=5)
            assert caught.value.code() is grpc.StatusCode.NOT_FOUND
        with grpc.secure_channel(target, grpc.ssl_channel_credentials(root)) as no_client_cert:
            assert not healthy(no_client_cert)
        with grpc.insecure_channel(target) as plaintext:
            assert not healthy(plaintext)
        assert "(mTLS)" in server.logs()


def test_taken_grpc_port_is_a_clear_error(tmp_path: Path) -> None:
    """A gRPC address in use (by anyone: grpcio's SO_REUSEPORT is off) stops startup naming
    WARRANT_GRPC_ADDR; nothing is left listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        public = free_port()
        env = base_env(
            tmp_path / "var",
            WARRANT_DEV="1",
            WARRANT_PUBLIC_ADDR=f"127.0.0.1:{public}",
            WARRANT_INTERNAL_ADDR=f"127.0.0.1:{free_port()}",
            WARRANT_SANDBOX_ADDR=f"127.0.0.1:{free_port()}",
            WARRANT_GRPC_ADDR=f"127.0.0.1:{port}",
        )
        result = cli(env, "serve", check=False)
    assert result.returncode == 1
    assert "WARRANT_GRPC_ADDR" in result.stderr
    assert "Traceback" not in result.stderr
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", public)) != 0


def test_grpc_can_be_switched_off(tmp_path: Path) -> None:
    """WARRANT_GRPC_ADDR=off serves HTTP only and says so."""
    with running_warrant(tmp_path / "var", WARRANT_GRPC_ADDR="off") as server:
        assert "grpc       off" in server.logs()
