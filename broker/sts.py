"""Long-lived aiobotocore STS clients, and the mapping from an STS response to AwsCredentials.

Creating a botocore client loads the service model and opens a connection pool, which costs far
more than the call itself, so clients live as long as the broker: one unsigned client per region
for AssumeRoleWithWebIdentity, and a few signed clients, keyed by the caller's access key, for
AssumeRole.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from broker.model import AwsCredentials
from broker.sts_errors import setup_failed
from keys.botocore_lazy import call_errors, session_for

if TYPE_CHECKING:
    from aiobotocore.config import AioConfig
    from aiobotocore.session import AioSession
    from types_aiobotocore_sts import STSClient
    from types_aiobotocore_sts.type_defs import AssumedRoleUserTypeDef, CredentialsTypeDef

__all__ = ["StsClients", "sts_credentials"]

# A regional STS endpoint accepts a connection in tens of milliseconds; after 2 s the network is
# broken, and failing fast lets the cache keep serving what it has instead of holding callers.
CONNECT_TIMEOUT = timedelta(seconds=2)
# STS answers AssumeRole in well under a second. AssumeRoleWithWebIdentity also waits while STS
# fetches our JWKS, which AWS itself gives up on after 5 s, so waiting longer gains nothing.
READ_TIMEOUT = timedelta(seconds=5)
# One retry (botocore "standard" mode: jittered, retries throttling and 5xx) absorbs a dropped
# connection or a single throttle; outages beyond that are the cache's job, with its backoff.
MAX_ATTEMPTS = 2
# Signed clients are keyed by the base credentials' access key, which the instance role rotates
# about hourly; a second hop signs with per-integration first-hop keys. A few cover the hot set.
SIGNED_CLIENTS = 16


@dataclass(eq=False)
class _Pooled:
    """A signed client, its closer, and how many callers hold it right now."""

    client: STSClient
    stack: contextlib.AsyncExitStack = field(repr=False)
    leases: int = 0
    evicted: bool = False


class StsClients:
    """Owns the broker's STS clients; `close()` closes every one of them."""

    def __init__(
        self,
        session: AioSession | None = None,
        *,
        endpoint_url: str | None = None,
        max_signed: int = SIGNED_CLIENTS,
    ) -> None:
        if max_signed < 1:
            raise ValueError("max_signed must be at least 1")
        self._session = session  # made at the first client or by prepare()
        self._warmed = False  # STS's data loaded into the session: see keys.botocore_lazy
        self._endpoint_url = endpoint_url  # WARRANT_STS_ENDPOINT: the local stand-in
        self._max_signed = max_signed
        self._stack = contextlib.AsyncExitStack()
        self._unsigned: dict[str, STSClient] = {}
        self._signed: OrderedDict[tuple[str, str], _Pooled] = OrderedDict()
        self._lock = asyncio.Lock()  # client creation is rare; one lock avoids duplicate clients
        self._closed = False

    def endpoint(self, region: str) -> str:
        """The endpoint for `region`: regional (never the global one, whose tokens do not work in
        opt-in regions), in the China partition for cn-* regions, or the configured override."""
        if self._endpoint_url is not None:
            return self._endpoint_url
        suffix = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
        return f"https://sts.{region}.{suffix}"

    async def unsigned(self, region: str) -> STSClient:
        """The unsigned client for `region` (AssumeRoleWithWebIdentity needs no credentials)."""
        async with self._lock:
            self._check_open()
            client = self._unsigned.get(region)
            if client is None:
                session = await self._aio_session()
                with _setting_up():
                    client = await self._stack.enter_async_context(
                        session.create_client(
                            "sts",
                            region_name=region,
                            endpoint_url=self.endpoint(region),
                            config=_config(unsigned=True),
                        )
                    )
                self._unsigned[region] = client
            return client

    @contextlib.asynccontextmanager
    async def signed(self, region: str, credentials: AwsCredentials) -> AsyncIterator[STSClient]:
        """A client signing with `credentials`, held for the duration of the `async with`.

        A lease, not a bare client: a client evicted from the pool is closed only once its last
        holder is done, so an eviction never breaks a call in flight.
        """
        pooled = await self._lease(region, credentials)
        try:
            yield pooled.client
        finally:
            pooled.leases -= 1
            if pooled.evicted and pooled.leases == 0:
                await pooled.stack.aclose()

    async def close(self) -> None:
        """Close every client. Later calls raise RuntimeError."""
        async with self._lock:
            self._closed = True
            pooled = list(self._signed.values())
            self._signed.clear()
            self._unsigned.clear()
        for entry in pooled:
            entry.evicted = True
            await entry.stack.aclose()
        await self._stack.aclose()

    async def _lease(self, region: str, credentials: AwsCredentials) -> _Pooled:
        key = (region, credentials.access_key_id)
        to_close: list[_Pooled] = []
        async with self._lock:
            self._check_open()
            pooled = self._signed.get(key)
            if pooled is None:
                session = await self._aio_session()
                stack = contextlib.AsyncExitStack()
                with _setting_up():
                    client = await stack.enter_async_context(
                        session.create_client(
                            "sts",
                            region_name=region,
                            endpoint_url=self.endpoint(region),
                            aws_access_key_id=credentials.access_key_id,
                            aws_secret_access_key=credentials.secret_access_key,
                            aws_session_token=credentials.session_token,
                            config=_config(),
                        )
                    )
                pooled = _Pooled(client, stack)
                self._signed[key] = pooled
                while len(self._signed) > self._max_signed:
                    _, old = self._signed.popitem(last=False)
                    old.evicted = True
                    if old.leases == 0:
                        to_close.append(old)
            self._signed.move_to_end(key)
            pooled.leases += 1
        for old in to_close:
            await old.stack.aclose()
        return pooled

    async def prepare(self) -> None:
        """Import the SDK and load what STS clients read, on a worker thread, so that the first
        exchange neither waits for it nor stalls the loop (a server calls this once it serves)."""
        async with self._lock:
            self._check_open()
            await self._aio_session()

    async def _aio_session(self) -> AioSession:
        """The session, with STS's data loaded into it (off the loop); under the lock."""
        if self._session is None or not self._warmed:
            with _setting_up():
                self._session = await session_for("sts", reuse=self._session)
            self._warmed = True
        return self._session

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("StsClients is closed")


@contextlib.contextmanager
def _setting_up() -> Iterator[None]:
    """The SDK's own failures while making a session or client, as the broker's 503."""
    try:
        yield
    except call_errors() as exc:
        raise setup_failed(exc) from exc


def _config(*, unsigned: bool = False) -> AioConfig:
    from aiobotocore.config import AioConfig  # noqa: PLC0415 - see keys.botocore_lazy
    from botocore import UNSIGNED  # noqa: PLC0415

    config = AioConfig(
        connect_timeout=CONNECT_TIMEOUT.total_seconds(),
        read_timeout=READ_TIMEOUT.total_seconds(),
        retries={"mode": "standard", "max_attempts": MAX_ATTEMPTS},
    )
    if unsigned:
        # AssumeRoleWithWebIdentity is a noAuth operation: the token is the credential.
        config = config.merge(AioConfig(signature_version=UNSIGNED))
    return config


def sts_credentials(
    credentials: CredentialsTypeDef, user: AssumedRoleUserTypeDef | None
) -> AwsCredentials:
    """Map STS's `Credentials` and `AssumedRoleUser` to AwsCredentials; the account id is read
    from the assumed-role ARN (arn:aws:sts::<account>:assumed-role/<role>/<session>)."""
    arn = user["Arn"] if user is not None else None
    parts = arn.split(":") if arn else []
    account_id = parts[4] if len(parts) >= 6 and parts[4] else None
    return AwsCredentials(
        access_key_id=credentials["AccessKeyId"],
        secret_access_key=credentials["SecretAccessKey"],
        session_token=credentials["SessionToken"],
        expiration=_utc(credentials["Expiration"]),
        account_id=account_id,
        assumed_role_arn=arn,
    )


def _utc(moment: datetime) -> datetime:
    # botocore parses timestamps as aware datetimes; a naive one from a stand-in is UTC.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
