"""The end-to-end world the broker's tests share: the strict STS stand-in in front of moto, a
fake IMDS, and the real `warrant serve`, with helpers that act as the operator, the agent
platform and the customer's admin would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import boto3  # type: ignore[import-untyped]
import httpx

from broker.standin import StandIn
from tests.e2e import RunningWarrant, free_port, running_warrant
from tests.fake_imds import FakeImds, running_imds

ACCOUNT = "123456789012"
SETUP_KEYS = {"aws_access_key_id": "AKIASETUP0000000TEST", "aws_secret_access_key": "setup"}
CLIENT = Path(__file__).with_name("sandbox_client.py")
# Short lifetimes so refreshes happen within a test: the stand-in issues 8-second credentials,
# the broker refreshes 4 s before expiry and never vends with less than 2 s left.
LIFETIME = timedelta(seconds=8)
FLOOR = "2"
REFRESH_AHEAD = "4"


@dataclass
class World:
    standin: StandIn
    server: RunningWarrant
    imds_url: str
    secrets: set[str] = field(default_factory=set)

    def iam(self) -> Any:
        return boto3.client(
            "iam", endpoint_url=self.standin.endpoint_url, region_name="us-east-1", **SETUP_KEYS
        )

    def admin(self, method: str, path: str, body: Any = None) -> httpx.Response:
        return httpx.request(
            method,
            self.server.internal_url + path,
            json=body,
            headers=self.server.key("admin"),
            timeout=10,
        )

    def agent(self, method: str, path: str, body: Any = None) -> httpx.Response:
        return httpx.request(
            method,
            self.server.internal_url + path,
            json=body,
            headers=self.server.key("agent"),
            timeout=30,
        )

    def standin_admin(self, method: str, path: str, body: Any = None) -> httpx.Response:
        return httpx.request(
            method, f"{self.standin.endpoint_url}/_standin{path}", json=body, timeout=5
        )

    @property
    def host(self) -> str:
        return self.server.issuer_url.split("://", 1)[1]

    def tenant(self, slug: str) -> None:
        response = self.admin("POST", "/v1/tenants", {"slug": slug})
        assert response.status_code == 201, response.text

    def integration(self, tenant: str, name: str, role: str, **extra: Any) -> dict[str, Any]:
        body = {
            "name": name,
            "account_id": ACCOUNT,
            "role_arn": f"arn:aws:iam::{ACCOUNT}:role/{role}",
            **extra,
        }
        response = self.admin("POST", f"/v1/tenants/{tenant}/integrations", body)
        assert response.status_code == 201, response.text
        result: dict[str, Any] = response.json()
        return result

    def oidc_role(self, role: str, *, aud: str, sub: str, max_session: int = 3600) -> None:
        trust = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Federated": f"arn:aws:iam::{ACCOUNT}:oidc-provider/{self.host}"},
                    "Action": "sts:AssumeRoleWithWebIdentity",
                    "Condition": {
                        "StringEquals": {f"{self.host}:aud": aud, f"{self.host}:sub": sub}
                    },
                }
            ],
        }
        self.iam().create_role(
            RoleName=role,
            AssumeRolePolicyDocument=json.dumps(trust),
            MaxSessionDuration=max_session,
        )

    def sandbox(self, tenant: str, integration: str, **extra: Any) -> dict[str, Any]:
        response = self.agent(
            "POST", "/v1/sandboxes", {"tenant": tenant, "integration": integration, **extra}
        )
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        for name in (
            "AWS_CONTAINER_AUTHORIZATION_TOKEN",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
        ):
            if name in body["env"]:
                self.secrets.add(body["env"][name])
        return body

    def vend(self, token: str) -> httpx.Response:
        response = httpx.get(self.server.sandbox_url, headers={"Authorization": token}, timeout=10)
        if response.status_code == 200:
            self.secrets.update({response.json()["SecretAccessKey"], response.json()["Token"]})
        return response

    def audit(self) -> list[dict[str, Any]]:
        """Every record of the server's audit log, in order."""
        path = self.server.data_dir / "audit.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines() if line]

    def run_admin_script(self, script: str, directory: Path) -> subprocess.CompletedProcess[str]:
        """Run a generated setup script as the customer's admin would: the AWS CLI, pointed at
        the stand-in, with setup credentials. Fails the test if the script fails."""
        path = directory / "setup.sh"
        path.write_text(script)
        env = {
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
            "HOME": "/nonexistent",
            "AWS_CONFIG_FILE": "/nonexistent",
            "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
            "AWS_ENDPOINT_URL": self.standin.endpoint_url,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": SETUP_KEYS["aws_access_key_id"],
            "AWS_SECRET_ACCESS_KEY": SETUP_KEYS["aws_secret_access_key"],
        }
        result = subprocess.run(
            ["bash", str(path)], env=env, capture_output=True, text=True, timeout=120, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return result

    def sandbox_env(self, grant: dict[str, Any]) -> dict[str, str]:
        """Only what Warrant handed out, plus the stand-in's STS endpoint (no real AWS here)."""
        return {
            **grant["env"],
            "PATH": os.environ["PATH"],
            "HOME": "/nonexistent",
            "AWS_ENDPOINT_URL_STS": self.standin.endpoint_url,
            "AWS_CONFIG_FILE": "/nonexistent",
            "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
        }


@contextmanager
def open_world(data: Path, reader_role: str = "acme-reader", **extra_env: str) -> Iterator[World]:
    """The stand-in (STS/IAM in front of moto), a fake IMDS and the real `warrant serve` with
    tenants acme and globex, and acme's `prod` integration trusted by `reader_role`. moto keeps
    IAM state per test process: each world in one run needs its own `reader_role`."""
    imds = FakeImds(
        role_name="warrant-host",
        credentials={
            "AccessKeyId": "ASIAHOSTINSTANCE0001",
            "SecretAccessKey": "host-secret-not-vended",
            "Token": "host-session-token",
            "Expiration": "2099-01-01T00:00:00Z",
        },
    )
    with (
        StandIn(allow_http_issuers=True, credential_lifetime=LIFETIME) as standin,
        running_imds(imds) as imds_url,
    ):
        sandbox_port = free_port()
        with running_warrant(
            data,
            WARRANT_STS_ENDPOINT=standin.endpoint_url,
            WARRANT_AWS_ENDPOINT=standin.endpoint_url,
            WARRANT_IMDS_ENDPOINT=imds_url,
            WARRANT_CREDENTIAL_FLOOR=FLOOR,
            WARRANT_CREDENTIAL_REFRESH_AHEAD=REFRESH_AHEAD,
            WARRANT_SANDBOX_ADDR=f"127.0.0.1:{sandbox_port}",
            **extra_env,
        ) as server:
            world = World(standin, server, imds_url)
            world.iam().create_open_id_connect_provider(
                # moto lacks AddClientIDToOpenIDConnectProvider: register every tenant's
                # audience up front (initech's is left out on purpose).
                Url=server.issuer_url,
                ClientIDList=["acme-oidc-service", "globex-oidc-service", "umbrella-oidc-service"],
                ThumbprintList=["0" * 40],
            )
            world.standin_admin(
                "POST",
                "/principals",
                {
                    "access_key_id": "ASIAHOSTINSTANCE0001",
                    "arn": f"arn:aws:iam::{ACCOUNT}:role/warrant-host",
                },
            )
            for slug in ("acme", "globex"):
                world.tenant(slug)
            prod = world.integration("acme", "prod", reader_role)
            world.oidc_role(reader_role, aud="acme-oidc-service", sub=f"tenant:acme:{prod['id']}")
            yield world


def run_client(
    world: World, grant: dict[str, Any], duration: float, interval: float
) -> list[dict[str, str]]:
    result = subprocess.run(
        [sys.executable, str(CLIENT), str(duration), str(interval)],
        env=world.sandbox_env(grant),
        capture_output=True,
        text=True,
        timeout=duration + 60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]
