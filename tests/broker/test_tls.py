"""TLS on the internal and sandbox listeners, with a certificate the operator provides."""

from __future__ import annotations

import ipaddress
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.e2e import running_warrant

pytestmark = pytest.mark.slow


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "tls.crt", directory / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def test_internal_and_sandbox_listeners_serve_tls(tmp_path: Path) -> None:
    """With cert and key set, the internal and sandbox listeners speak only TLS, and the
    container-credentials URL handed to sandboxes is https."""
    cert, key = self_signed(tmp_path)
    with running_warrant(
        tmp_path / "var",
        WARRANT_INTERNAL_TLS_CERT=str(cert),
        WARRANT_INTERNAL_TLS_KEY=str(key),
        WARRANT_SANDBOX_TLS_CERT=str(cert),
        WARRANT_SANDBOX_TLS_KEY=str(key),
    ) as server:
        trust = ssl.create_default_context(cafile=str(cert))
        assert server.internal_url.startswith("https://")
        assert server.sandbox_url.startswith("https://")
        ready = httpx.get(server.internal_url + "/readyz", verify=trust, timeout=5)
        assert ready.status_code == 200
        tenants = httpx.get(
            server.internal_url + "/v1/tenants",
            headers=server.key("admin"),
            verify=trust,
            timeout=5,
        )
        assert tenants.status_code == 200
        refused = httpx.get(
            server.sandbox_url,
            headers={"Authorization": "wsb_" + "x" * 43},
            verify=trust,
            timeout=5,
        )
        assert refused.status_code == 401
        with pytest.raises(httpx.HTTPError):
            httpx.get(server.internal_url.replace("https://", "http://") + "/healthz", timeout=5)
        with pytest.raises(httpx.ConnectError):
            httpx.get(server.internal_url + "/healthz", timeout=5)  # untrusted certificate
