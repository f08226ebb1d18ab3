"""Test connection: obtain credentials the real way, check who they are, then probe each
capability of a profile with one cheap read-only call, concurrently, each with a timeout."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any

from broker.errors import BrokerError
from broker.model import AwsCredentials, CredentialRequest
from broker.protocols import CredentialSource
from broker.setup import Profile
from keys.botocore_lazy import session_for

if TYPE_CHECKING:
    from aiobotocore.session import AioSession

# One probe may take this long; a capability that does not answer by then is reported as an
# error, not a denial (it says nothing about permissions).
PROBE_TIMEOUT = timedelta(seconds=5)
# Errors that mean "the credentials work, the policy says no".
DENIED_CODES = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "UnauthorizedOperation",
        "UnauthorizedAccess",
        "AuthorizationError",
        "UnauthorizedException",
        "Forbidden",
    }
)


@dataclass(frozen=True, slots=True)
class Probe:
    capability: str
    service: str
    operation: str
    params: Callable[[date], dict[str, Any]]
    region: str | None = None  # a global service's home region (Cost Explorer)


def _month(today: date) -> dict[str, Any]:
    return {
        "TimePeriod": {
            "Start": today.replace(day=1).isoformat(),
            "End": (today + timedelta(days=1)).isoformat(),
        },
        "Granularity": "MONTHLY",
        "Metrics": ["UnblendedCost"],
    }


_COMMON = (
    Probe("logs", "logs", "describe_log_groups", lambda _: {"limit": 1}),
    Probe("cloudwatch", "cloudwatch", "describe_alarms", lambda _: {"MaxRecords": 1}),
    Probe("ec2", "ec2", "describe_instances", lambda _: {"MaxResults": 5}),
    Probe("ecs", "ecs", "list_clusters", lambda _: {"maxResults": 1}),
    Probe("eks", "eks", "list_clusters", lambda _: {"maxResults": 1}),
)
PROBES: dict[Profile, tuple[Probe, ...]] = {
    Profile.INCIDENT: (
        *_COMMON,
        Probe(
            "elasticache", "elasticache", "describe_cache_clusters", lambda _: {"MaxRecords": 20}
        ),
    ),
    Profile.ANALYSIS: (
        *_COMMON,
        Probe("lambda", "lambda", "list_functions", lambda _: {"MaxItems": 1}),
        Probe("rds", "rds", "describe_db_instances", lambda _: {"MaxRecords": 20}),
        Probe("s3", "s3", "list_buckets", lambda _: {}),
        Probe("cost explorer", "ce", "get_cost_and_usage", _month, region="us-east-1"),
    ),
}


TESTED_AT_FORMAT = "%Y-%m-%dT%H:%M:%SZ"  # stored and shown in UTC


@dataclass(frozen=True, slots=True)
class CapabilityResult:
    capability: str
    status: str  # allowed | denied | error
    detail: str


@dataclass(frozen=True, slots=True)
class ConnectionReport:
    integration_id: str
    profile: Profile
    status: str  # active | failed
    tested_at: datetime
    account: str | None = None
    assumed_role_arn: str | None = None
    error: str | None = None
    capabilities: tuple[CapabilityResult, ...] = ()
    diagnosis: dict[str, Any] | None = None  # what AWS must be told, next to what we send

    def to_json(self) -> dict[str, Any]:
        return {
            "integration": self.integration_id,
            "profile": self.profile.value,
            "status": self.status,
            "tested_at": self.tested_at.astimezone(UTC).strftime(TESTED_AT_FORMAT),
            "account": self.account,
            "assumed_role_arn": self.assumed_role_arn,
            "error": self.error,
            "diagnosis": self.diagnosis,
            "capabilities": [
                {"capability": c.capability, "status": c.status, "detail": c.detail}
                for c in self.capabilities
            ],
        }

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> ConnectionReport:
        return cls(
            integration_id=value["integration"],
            profile=Profile(value["profile"]),
            status=value["status"],
            tested_at=datetime.strptime(value["tested_at"], "%Y-%m-%dT%H:%M:%SZ").replace(
                tzinfo=UTC
            ),
            account=value.get("account"),
            assumed_role_arn=value.get("assumed_role_arn"),
            error=value.get("error"),
            capabilities=tuple(CapabilityResult(**c) for c in value.get("capabilities", [])),
            diagnosis=value.get("diagnosis"),
        )


Progress = Callable[[str], None]


class ConnectionTester:
    def __init__(
        self,
        source: CredentialSource,
        *,
        clock: Callable[[], datetime],
        endpoint_url: str | None = None,
        session: AioSession | None = None,
    ) -> None:
        self._source = source
        self._clock = clock
        self._endpoint_url = endpoint_url  # the local stand-in; None means AWS itself
        self._session = session  # made at the first probe: see keys.botocore_lazy

    async def test(
        self, request: CredentialRequest, profile: Profile, progress: Progress | None = None
    ) -> ConnectionReport:
        say = progress or (lambda _: None)
        integration = request.integration
        report = partial(ConnectionReport, integration.id, profile, tested_at=self._clock())
        say(f"obtaining credentials for {integration.role_arn} ({integration.method.value})")
        try:
            credentials = await self._source.fetch(request)
        except BrokerError as exc:
            say(f"  failed: {exc.message}")
            return report(status="failed", error=exc.message)
        say("calling sts:GetCallerIdentity")
        try:
            identity = await self._call(
                credentials, integration.region, "sts", "get_caller_identity", {}
            )
        except Exception as exc:
            return report(status="failed", error=f"GetCallerIdentity failed: {exc}")
        account, arn = identity.get("Account"), identity.get("Arn")
        say(f"  account {account}, {arn}")
        if account != integration.account_id:
            return report(
                status="failed",
                account=account,
                assumed_role_arn=arn,
                error=f"the credentials belong to account {account}, but the integration is "
                f"for {integration.account_id}: check role_arn",
            )
        probes = PROBES[profile]
        say(f"probing {len(probes)} capabilities of the {profile.value} profile")
        # The probed services' models load once, on one worker thread (EC2's alone is
        # megabytes of JSON): the probes' clients then only assemble, on the loop. A failure
        # here (the SDK's configuration) is met and reported by each probe.
        with contextlib.suppress(Exception):
            services = sorted({p.service for p in probes})
            self._session = await session_for(*services, reuse=self._session)
        results = await asyncio.gather(
            *[self._probe(credentials, integration.region, probe) for probe in probes]
        )
        for result in results:
            say(f"  {result.capability:<14} {result.status}  {result.detail}")
        return report(
            status="active", account=account, assumed_role_arn=arn, capabilities=tuple(results)
        )

    async def _probe(
        self, credentials: AwsCredentials, region: str, probe: Probe
    ) -> CapabilityResult:
        call = f"{probe.service}:{probe.operation}"
        try:
            await self._call(
                credentials,
                probe.region or region,
                probe.service,
                probe.operation,
                probe.params(self._clock().date()),
            )
        except TimeoutError:
            return CapabilityResult(
                probe.capability,
                "error",
                f"{call}: no answer in {PROBE_TIMEOUT.total_seconds():.0f} s",
            )
        except Exception as exc:
            return _failed(probe.capability, call, exc)
        return CapabilityResult(probe.capability, "allowed", call)

    async def _call(
        self,
        credentials: AwsCredentials,
        region: str,
        service: str,
        operation: str,
        params: dict[str, Any],
    ) -> dict[str, Any]:
        seconds = PROBE_TIMEOUT.total_seconds()
        session = await self._aio_session()
        from botocore.config import Config  # noqa: PLC0415 - loaded: see keys.botocore_lazy

        config = Config(
            connect_timeout=seconds, read_timeout=seconds, retries={"total_max_attempts": 1}
        )
        async with session.create_client(  # type: ignore[call-overload]
            service,
            region_name=region,
            endpoint_url=self._endpoint_url,
            aws_access_key_id=credentials.access_key_id,
            aws_secret_access_key=credentials.secret_access_key,
            aws_session_token=credentials.session_token,
            config=config,
        ) as client:
            async with asyncio.timeout(seconds):
                result: dict[str, Any] = await getattr(client, operation)(**params)
        return result

    async def _aio_session(self) -> AioSession:
        if self._session is None:
            self._session = await session_for()  # off the loop: see keys.botocore_lazy
        return self._session


def _failed(capability: str, call: str, exc: Exception) -> CapabilityResult:
    """A probe's failure: AWS's refusal (denied, or an error with its code), or anything else."""
    from botocore.exceptions import ClientError  # noqa: PLC0415 - see keys.botocore_lazy

    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        status = "denied" if code in DENIED_CODES else "error"
        return CapabilityResult(capability, status, f"{call}: {code}")
    # botocore's parser errors are not BotoCoreErrors: any failure is this probe's.
    return CapabilityResult(capability, "error", f"{call}: {type(exc).__name__}")
