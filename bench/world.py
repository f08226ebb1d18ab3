"""The broker's benchmark world: a real `warrant serve` exchanging at the STS stand-in, the IAM
OIDC provider that trusts its issuer, one tenant, and an integration with its own role on demand.

Set up exactly as an operator (and tests/broker/test_e2e.py) does it: IAM calls through the
stand-in with dummy keys; the provider registered with the tenant's audience as client id (moto
lacks AddClientIDToOpenIDConnectProvider); every role trusting the provider with `aud` and `sub`
pinned to one integration.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import boto3  # type: ignore[import-untyped]
import httpx
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from bench.errors import BenchError
from bench.servers import Warrant
from broker.session_name import session_name
from issuer.tenants import audience_for

__all__ = ["BROKER_ALG", "TENANT", "BrokerWorld", "CacheCounters", "IntegrationRef"]

BROKER_ALG = "RS256"  # Warrant's default signing algorithm
TENANT = "bench"
ACCOUNT = "123456789012"
# IAM at the stand-in wants signed calls; moto accepts any key.
SETUP_KEYS = {"aws_access_key_id": "AKIASETUP0000000TEST", "aws_secret_access_key": "setup"}
REGION = "us-east-1"
# Set-up and timed requests alike: a healthy local server answers in milliseconds.
REQUEST_TIMEOUT = timedelta(seconds=30)
_SAMPLE = re.compile(r"^(warrant_credential_cache_[a-z_]+?)(?:_total)? ([0-9.e+-]+)$", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class CacheCounters:
    """The broker's session-cache metrics (GET /metrics), read at one moment."""

    hits: int
    misses: int  # requests that waited for an STS call (or were refused one)
    refreshes: int  # STS calls the cache started
    evictions: int
    size: int  # sessions cached now


@dataclass(frozen=True, slots=True)
class IntegrationRef:
    """An oidc integration of TENANT and the role that trusts exactly its tokens."""

    id: str
    name: str
    role_arn: str
    region: str
    session_duration: int

    @property
    def subject(self) -> str:
        """The `sub` of the broker's tokens for this integration: tenant:<slug>:<id>."""
        return f"tenant:{TENANT}:{self.id}"

    @property
    def session_name(self) -> str:
        """The RoleSessionName the broker uses for it."""
        return session_name(TENANT, self.name)


class BrokerWorld:
    """Clients of one broker server; `close()` releases them (the server is the session's)."""

    def __init__(self, warrant: Warrant) -> None:
        if warrant.sts_endpoint is None:
            raise BenchError("the broker's benchmarks need a server exchanging at the stand-in")
        self.warrant = warrant
        self.http = httpx.Client(timeout=REQUEST_TIMEOUT.total_seconds())
        self._admin = {"Authorization": f"Bearer {warrant.api_key('admin')}"}
        self._agent = {"Authorization": f"Bearer {warrant.api_key('agent')}"}
        self._iam: Any = boto3.client(
            "iam", endpoint_url=warrant.sts_endpoint, region_name=REGION, **SETUP_KEYS
        )
        # What a client without Warrant would use: an SDK's unsigned AssumeRoleWithWebIdentity.
        # One attempt: a retry would hide a failure inside a latency sample.
        self._sts: Any = boto3.client(
            "sts",
            endpoint_url=warrant.sts_endpoint,
            region_name=REGION,
            config=Config(signature_version=UNSIGNED, retries={"max_attempts": 1}),
        )
        self._prefix = f"bench-{warrant.public_url.rsplit(':', 1)[1]}"  # unique per server
        self._count = 0

    def close(self) -> None:
        self.http.close()
        self._iam.close()
        self._sts.close()

    def setup(self, *, iam: bool = True) -> None:
        """The IAM OIDC provider for the server's issuer (unless not `iam`: an STS that checks
        nothing, bench.quick_sts), and the tenant."""
        if iam:
            self._register_provider()
        self.admin("POST", "/v1/tenants", {"slug": TENANT, "name": "Benchmark"}, expect=201)

    def _register_provider(self) -> None:
        try:
            self._iam.create_open_id_connect_provider(
                Url=self.warrant.issuer_url,
                ClientIDList=[audience_for(TENANT)],
                ThumbprintList=["0" * 40],
            )
        except (ClientError, BotoCoreError) as exc:
            raise BenchError(
                f"cannot register the IAM OIDC provider at the stand-in: {exc}"
            ) from exc

    def integration(self, label: str, *, role: bool = True) -> IntegrationRef:
        """A new oidc integration `<label>-<n>` and its own role (unless not `role`: an STS that
        checks nothing, bench.quick_sts): nothing of it is cached yet."""
        self._count += 1
        name = f"{label}-{self._count}"
        role_name = f"{self._prefix}-{name}"
        body = self.admin(
            "POST",
            f"/v1/tenants/{TENANT}/integrations",
            {
                "name": name,
                "account_id": ACCOUNT,
                "role_arn": f"arn:aws:iam::{ACCOUNT}:role/{role_name}",
            },
            expect=201,
        )
        ref = IntegrationRef(
            id=body["id"],
            name=name,
            role_arn=body["role_arn"],
            region=body["region"],
            session_duration=body["session_duration"],
        )
        if role:
            self._create_role(ref, role_name)
        return ref

    def _create_role(self, ref: IntegrationRef, role: str) -> None:
        """The role trusting exactly `ref`'s tokens, at the stand-in's IAM."""
        host = self.warrant.issuer_url.split("://", 1)[1]
        trust = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Federated": f"arn:aws:iam::{ACCOUNT}:oidc-provider/{host}"},
                    "Action": "sts:AssumeRoleWithWebIdentity",
                    "Condition": {
                        "StringEquals": {
                            f"{host}:aud": audience_for(TENANT),
                            f"{host}:sub": ref.subject,
                        }
                    },
                }
            ],
        }
        try:
            self._iam.create_role(
                RoleName=role,
                AssumeRolePolicyDocument=json.dumps(trust),
                MaxSessionDuration=max(3600, ref.session_duration),
            )
        except (ClientError, BotoCoreError) as exc:
            raise BenchError(f"cannot create role {role} at the stand-in: {exc}") from exc

    # The calls the benchmarks time. Each returns the response; the caller checks it.

    def create_sandbox(
        self, ref: IntegrationRef, *, session_policy: str | None = None
    ) -> httpx.Response:
        """POST /v1/sandboxes (container delivery): the broker mints, exchanges, stores."""
        url, body, headers = self.sandbox_call(ref, session_policy=session_policy)
        return self.http.post(url, json=body, headers=headers)

    def sandbox_call(
        self, ref: IntegrationRef, *, session_policy: str | None = None
    ) -> tuple[str, dict[str, Any], dict[str, str]]:
        """URL, JSON body and headers of POST /v1/sandboxes on `ref` (container delivery); with
        `session_policy`, the sandbox gets a session of its own."""
        body: dict[str, Any] = {"tenant": TENANT, "integration": ref.name}
        if session_policy is not None:
            body["session_policy"] = session_policy
        return f"{self.warrant.internal_url}/v1/sandboxes", body, dict(self._agent)

    def mint(self, ref: IntegrationRef) -> httpx.Response:
        """POST /v1/tokens for the integration's subject: the token its role trusts."""
        return self.http.post(
            f"{self.warrant.internal_url}/v1/tokens",
            json={"tenant": TENANT, "subject": ref.id},
            headers=self._agent,
        )

    def assume(self, ref: IntegrationRef, token: str) -> dict[str, Any]:
        """AssumeRoleWithWebIdentity at the stand-in, as the broker calls it (same role,
        session name and duration). Raises ClientError or BotoCoreError."""
        response: dict[str, Any] = self._sts.assume_role_with_web_identity(
            RoleArn=ref.role_arn,
            RoleSessionName=ref.session_name,
            WebIdentityToken=token,
            DurationSeconds=ref.session_duration,
        )
        return response

    def exchanges(self) -> int:
        """Successful AssumeRoleWithWebIdentity calls the stand-in has answered so far."""
        url = f"{self.warrant.sts_endpoint}/_standin/stats"
        try:
            stats = self.http.get(url).json()
            return int(stats.get("AssumeRoleWithWebIdentity", {}).get("ok", 0))
        except (httpx.HTTPError, ValueError, AttributeError, TypeError) as exc:
            raise BenchError(f"cannot read the stand-in's stats at {url}: {exc}") from exc

    def exchange_calls(self) -> int:
        """AssumeRoleWithWebIdentity calls the stand-in has received so far, whatever their
        outcome (a throttled or refused call is a call too)."""
        return sum(self._stats().get("AssumeRoleWithWebIdentity", {}).values())

    def _stats(self) -> dict[str, dict[str, int]]:
        url = f"{self.warrant.sts_endpoint}/_standin/stats"
        try:
            stats = self.http.get(url).json()
            return {
                str(action): {str(code): int(n) for code, n in counts.items()}
                for action, counts in stats.items()
            }
        except (httpx.HTTPError, ValueError, AttributeError, TypeError) as exc:
            raise BenchError(f"cannot read the stand-in's stats at {url}: {exc}") from exc

    def slow_exchanges(self, delay: timedelta, count: int) -> None:
        """The stand-in answers the next `count` STS calls as usual, but `delay` late."""
        self._faults({"mode": "slow", "delay": delay.total_seconds(), "remaining": count})

    def clear_faults(self) -> None:
        self._faults({"mode": "none"})

    def _faults(self, plan: dict[str, Any]) -> None:
        url = f"{self.warrant.sts_endpoint}/_standin/faults"
        try:
            response = self.http.post(url, json=plan)
        except httpx.HTTPError as exc:
            raise BenchError(f"POST {url} failed: {exc}") from exc
        if response.status_code >= 300:
            raise BenchError(f"POST {url} answered {response.status_code}: {response.text}")

    def cache_counters(self) -> CacheCounters:
        """The session cache's counters from GET /metrics on the internal listener."""
        url = f"{self.warrant.internal_url}/metrics"
        try:
            response = self.http.get(url)
        except httpx.HTTPError as exc:
            raise BenchError(f"GET {url} failed: {exc}") from exc
        samples = {name: float(value) for name, value in _SAMPLE.findall(response.text)}
        try:
            return CacheCounters(
                *(
                    int(samples[f"warrant_credential_cache_{name}"])
                    for name in ("hits", "misses", "refreshes", "evictions", "size")
                )
            )
        except KeyError as exc:
            raise BenchError(f"GET {url} has no {exc.args[0]}: {response.text[:300]}") from exc

    def vend(self, token: str) -> httpx.Response:
        return self.http.get(self.warrant.sandbox_url, headers={"Authorization": token})

    # Set-up requests.

    def admin(self, method: str, path: str, body: dict[str, Any], *, expect: int) -> dict[str, Any]:
        """One admin request; its JSON answer, or BenchError with the answer and the server's
        stderr when the status is not `expect`."""
        url = self.warrant.internal_url + path
        try:
            response = self.http.request(method, url, json=body, headers=self._admin)
        except httpx.HTTPError as exc:
            self.warrant.server.check_alive()
            raise BenchError(f"{method} {url} failed: {exc}") from exc
        return checked(self.warrant, f"{method} {url}", response, expect)


def checked(warrant: Warrant, what: str, response: httpx.Response, expect: int) -> dict[str, Any]:
    """The JSON object of a response with status `expect`; BenchError otherwise."""
    if response.status_code != expect:
        raise BenchError(
            f"{what} answered {response.status_code}, expected {expect}: "
            f"{response.text[:500]}\n{warrant.server.stderr_tail()}"
        )
    try:
        value = response.json()
    except ValueError as exc:
        raise BenchError(f"{what} answered {expect} without JSON: {response.text[:200]}") from exc
    if not isinstance(value, dict):
        raise BenchError(f"{what} answered {expect} with {type(value).__name__}, not an object")
    return value
