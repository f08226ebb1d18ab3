"""The chaos suite's world: the strict STS stand-in in front of moto, a fake IMDS whose faults the
test controls, and the real `warrant serve`, like tests/broker/world.py's but with the credential
lifetime, floor and refresh-ahead a scenario needs, one tenant, and the IMDS at hand.

moto's IAM is shared by every world in a test process, so role names carry a random suffix."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from broker.standin import StandIn
from tests.broker.world import ACCOUNT, World
from tests.e2e import free_port, running_warrant
from tests.fake_imds import FakeImds, running_imds

HOST_ACCESS_KEY = "ASIAHOSTINSTANCE0001"  # the instance role's own key: must never be vended
HOST_ROLE = "warrant-host"
SDK_CLIENT = Path(__file__).with_name("sdk_client.py")


@dataclass
class ChaosWorld(World):
    slug: str = "chaos"  # the world's tenant
    imds: FakeImds = field(
        default_factory=lambda: FakeImds(role_name=HOST_ROLE, credentials=host_credentials())
    )

    def oidc_integration(self, name: str) -> dict[str, Any]:
        """An oidc integration and the role trusting our token for it (aud and sub pinned)."""
        role = f"{self.slug}-{name}-{secrets.token_hex(3)}"
        integration = self.integration(self.slug, name, role)
        self.oidc_role(
            role, aud=f"{self.slug}-oidc-service", sub=f"tenant:{self.slug}:{integration['id']}"
        )
        return integration

    def instance_role_integration(self, name: str) -> dict[str, Any]:
        """An instance_role integration and the role trusting Warrant's instance role with the
        integration's ExternalId."""
        role = f"{self.slug}-{name}-{secrets.token_hex(3)}"
        integration = self.integration(self.slug, name, role, method="instance_role")
        statement = {
            "Effect": "Allow",
            "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:role/{HOST_ROLE}"},
            "Action": "sts:AssumeRole",
            "Condition": {"StringEquals": {"sts:ExternalId": integration["external_id"]}},
        }
        self.iam().create_role(
            RoleName=role,
            AssumeRolePolicyDocument=json.dumps(
                {"Version": "2012-10-17", "Statement": [statement]}
            ),
        )
        return integration

    def stats(self, action: str = "AssumeRoleWithWebIdentity") -> dict[str, int]:
        """The stand-in's outcome counts for `action` so far."""
        counts: dict[str, int] = self.standin_admin("GET", "/stats").json().get(action, {})
        return counts

    def fault(self, mode: str, remaining: int | None = None) -> None:
        """Inject an STS fault in the stand-in (`none` clears it)."""
        response = self.standin_admin("POST", "/faults", {"mode": mode, "remaining": remaining})
        assert response.status_code == 200, response.text


def host_credentials() -> dict[str, str]:
    return {
        "AccessKeyId": HOST_ACCESS_KEY,
        "SecretAccessKey": "host-secret-not-vended",
        "Token": "host-session-token",
        "Expiration": "2099-01-01T00:00:00Z",
    }


@contextmanager
def chaos_world(
    data: Path,
    *,
    tenant: str = "chaos",
    lifetime: timedelta,
    floor: int,
    refresh_ahead: int,
    **extra_env: str,
) -> Iterator[ChaosWorld]:
    """The stand-in issuing credentials that live `lifetime`, a fake IMDS, and `warrant serve`
    with the given floor and refresh-ahead (seconds) and `extra_env`; `tenant` exists and the
    IAM OIDC provider accepts its audience."""
    imds = FakeImds(role_name=HOST_ROLE, credentials=host_credentials())
    with (
        StandIn(allow_http_issuers=True, credential_lifetime=lifetime) as standin,
        running_imds(imds) as imds_url,
        running_warrant(
            data,
            WARRANT_STS_ENDPOINT=standin.endpoint_url,
            WARRANT_AWS_ENDPOINT=standin.endpoint_url,
            WARRANT_IMDS_ENDPOINT=imds_url,
            WARRANT_CREDENTIAL_FLOOR=str(floor),
            WARRANT_CREDENTIAL_REFRESH_AHEAD=str(refresh_ahead),
            WARRANT_SANDBOX_ADDR=f"127.0.0.1:{free_port()}",
            **extra_env,
        ) as server,
    ):
        world = ChaosWorld(standin, server, imds_url, slug=tenant, imds=imds)
        world.iam().create_open_id_connect_provider(
            Url=server.issuer_url,
            ClientIDList=[f"{tenant}-oidc-service"],
            ThumbprintList=["0" * 40],
        )
        world.standin_admin(
            "POST",
            "/principals",
            {"access_key_id": HOST_ACCESS_KEY, "arn": f"arn:aws:iam::{ACCOUNT}:role/{HOST_ROLE}"},
        )
        world.tenant(tenant)
        yield world


class SdkClient:
    """tests/chaos/sdk_client.py in a process of its own, with only the sandbox's environment:
    unmodified boto3 calling sts:GetCallerIdentity every 0.25 s for `duration` seconds, one JSON
    line per call. `gated`: it waits for `go()` before it first asks for credentials."""

    def __init__(
        self, world: World, grant: dict[str, Any], duration: float, *, gated: bool = False
    ) -> None:
        name = f"sdk-{secrets.token_hex(4)}"
        self._stdout = world.server.log_dir / f"{name}.jsonl"
        self._stderr = world.server.log_dir / f"{name}.err"
        args = [sys.executable, str(SDK_CLIENT), str(duration), "0.25"]
        with self._stdout.open("w") as out, self._stderr.open("w") as err:
            self.process = subprocess.Popen(
                [*args, "--wait-for-go"] if gated else args,
                env=world.sandbox_env(grant),
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=err,
                text=True,
            )

    def wait_ready(self, timeout: float = 60) -> None:
        """Until the gated client has imported boto3 and waits for `go()`."""
        deadline = time.monotonic() + timeout
        while {"ready": True} not in self.lines():
            assert self.process.poll() is None, self._stderr.read_text()
            assert time.monotonic() < deadline, "the SDK client did not start"
            time.sleep(0.02)

    def go(self, duration: float | None = None) -> None:
        """Start calling now (for `duration` seconds, if given: counted from now)."""
        assert self.process.stdin is not None
        self.process.stdin.write(f"{'' if duration is None else max(0.0, duration)}\n")
        self.process.stdin.flush()

    def finish(self, timeout: float = 60) -> list[dict[str, Any]]:
        """Wait for the client to end; its lines (errors included), the ready line left out."""
        try:
            self.process.wait(timeout=timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            if self.process.stdin is not None:
                self.process.stdin.close()
        assert self.process.returncode == 0, self._stderr.read_text()
        return [line for line in self.lines() if "ready" not in line]

    def kill(self) -> None:
        """Stop it at once if it still runs (a failed test's cleanup)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        if self.process.stdin is not None:
            self.process.stdin.close()

    def lines(self) -> list[dict[str, Any]]:
        """What it printed so far (a line still being written is left out)."""
        text = self._stdout.read_text()
        complete = text[: text.rfind("\n") + 1]
        return [json.loads(line) for line in complete.splitlines() if line]
