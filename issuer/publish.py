"""Static publishing: copy the public documents to S3, byte for byte as the live listener serves
them, so that S3 (alone or behind CloudFront) can be the issuer AWS STS fetches from.

`S3Publisher` writes one key set's documents with the live `Content-Type` and `Cache-Control`.
`AutoPublisher` keeps the bucket equal to what the running service serves: after every key-set
change, whoever made it (this service's schedule, the CLI, another replica), because it compares
the documents it last published with the ones the key ring serves now.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from issuer.discovery import DISCOVERY_PATH
from issuer.documents import StaticDocument
from issuer.errors import IssuerError
from issuer.keyring import KeyRing
from issuer.settings import PublishTarget
from keys.botocore_lazy import call_errors, new_session, session_for, setup_problem
from keys.protocols import KeyStore

if TYPE_CHECKING:
    from aiobotocore.session import AioSession
    from types_aiobotocore_s3 import S3Client

__all__ = [
    "AutoPublisher",
    "PublishError",
    "PublishedObject",
    "S3Publisher",
    "load_documents",
    "object_keys",
    "open_s3_client",
]

log = logging.getLogger(__name__)

# S3 accepts a connection in milliseconds; after 2 s the endpoint is wrong or the network broken,
# and the operator (or the next retry) should hear so at once.
CONNECT_TIMEOUT = timedelta(seconds=2)
# A PutObject of a few kilobytes answers well under a second; 10 s absorbs a slow moment.
READ_TIMEOUT = timedelta(seconds=10)
# botocore "standard" retries (jittered; throttling and 5xx): a blip costs a retry, not a failure.
MAX_ATTEMPTS = 3
# After a failed publish the service waits this long before trying again rather than failing
# (and logging) on every reload tick. Far below the 1 h publish-ahead, so a new key still reaches
# S3 long before it may sign, once S3 is back.
RETRY_DELAY = timedelta(seconds=30)

_DENIED = frozenset({"AccessDenied", "AllAccessDisabled", "AccountProblem"})
_BAD_CREDENTIALS = frozenset(
    {"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken"}
)


class PublishError(IssuerError):
    """S3 refused or could not be reached; the message says what to fix."""

    status = 502
    code = "publish_failed"


@dataclass(frozen=True, slots=True)
class PublishedObject:
    bucket: str
    key: str
    content_type: str
    cache_control: str

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def object_keys(discovery: bytes, issuer_url: str, prefix: str | None) -> tuple[str, str]:
    """The S3 keys of the discovery document and the JWKS.

    Both sit where the discovery document says they are, relative to the issuer URL; `prefix`
    is where the issuer URL's root lives in the bucket (None: the issuer URL's own path, which is
    right for a bucket or CloudFront distribution serving the issuer's host at its root).
    """
    jwks_uri = json.loads(discovery)["jwks_uri"]
    if not isinstance(jwks_uri, str) or not jwks_uri.startswith(issuer_url + "/"):
        raise PublishError(
            f"the discovery document's jwks_uri {jwks_uri!r} is not under the issuer URL "
            f"{issuer_url!r}, so it cannot be published next to it"
        )
    base = urlsplit(issuer_url).path.strip("/") if prefix is None else prefix

    def key(path: str) -> str:
        path = path.lstrip("/")
        return f"{base}/{path}" if base else path

    return key(DISCOVERY_PATH), key(jwks_uri[len(issuer_url) :])


@contextlib.asynccontextmanager
async def open_s3_client(
    endpoint_url: str | None, session: AioSession | None = None
) -> AsyncIterator[S3Client]:
    """An S3 client with explicit timeouts. `endpoint_url` is WARRANT_AWS_ENDPOINT (the local
    stand-in or moto in tests); None leaves it to botocore, which also honours AWS_ENDPOINT_URL.
    Credentials and region come from the usual AWS chain (env, profile, pod or instance role).
    An SDK that cannot make the client (an unparseable AWS_CONFIG_FILE, say) is a PublishError
    naming the problem; errors inside the `async with` pass unchanged."""
    from aiobotocore.config import AioConfig  # noqa: PLC0415 - see keys.botocore_lazy

    config = AioConfig(
        connect_timeout=CONNECT_TIMEOUT.total_seconds(),
        read_timeout=READ_TIMEOUT.total_seconds(),
        retries={"mode": "standard", "total_max_attempts": MAX_ATTEMPTS},
    )
    async with contextlib.AsyncExitStack() as stack:
        try:
            client: S3Client = await stack.enter_async_context(
                (session or new_session()).create_client(
                    "s3", endpoint_url=endpoint_url, config=config
                )
            )
        except call_errors() as exc:
            raise PublishError(setup_problem(exc, "S3")) from exc
        yield client


class S3Publisher:
    """Writes the discovery document and the JWKS to one bucket and prefix."""

    def __init__(
        self, client: S3Client, *, bucket: str, prefix: str | None, issuer_url: str
    ) -> None:
        self._client = client
        self._bucket = bucket
        self._prefix = prefix
        self._issuer_url = issuer_url

    async def publish(
        self, discovery: StaticDocument, jwks: StaticDocument
    ) -> tuple[PublishedObject, ...]:
        """Raises PublishError with what to fix; nothing else escapes from S3 or botocore."""
        discovery_key, jwks_key = object_keys(discovery.body, self._issuer_url, self._prefix)
        # The JWKS first: a verifier that reads the new discovery document (which may list a
        # new algorithm) must find the keys it announces.
        return (await self._put(jwks_key, jwks), await self._put(discovery_key, discovery))

    async def _put(self, key: str, document: StaticDocument) -> PublishedObject:
        headers = dict(document.headers)
        published = PublishedObject(
            bucket=self._bucket,
            key=key,
            content_type=headers[b"content-type"].decode("latin-1"),
            cache_control=headers[b"cache-control"].decode("latin-1"),
        )
        try:
            await self._client.put_object(
                Bucket=self._bucket,
                Key=key,
                Body=document.body,
                ContentType=published.content_type,
                CacheControl=published.cache_control,
            )
        except call_errors() as exc:
            raise self._explain(exc, published) from exc
        return published

    def _explain(self, exc: Exception, target: PublishedObject) -> PublishError:
        from botocore.exceptions import (  # noqa: PLC0415 - see keys.botocore_lazy
            ClientError,
            ConnectionClosedError,
            EndpointConnectionError,
            NoCredentialsError,
            PartialCredentialsError,
            ReadTimeoutError,
        )

        endpoint = self._client.meta.endpoint_url
        if isinstance(exc, ClientError):
            code = exc.response.get("Error", {}).get("Code", "") or "unknown"
            return _refused(code, target, endpoint)
        if isinstance(exc, NoCredentialsError | PartialCredentialsError):
            return PublishError(
                "no usable AWS credentials to write to S3; give Warrant an identity with "
                "s3:PutObject (environment, profile, pod or instance role)"
            )
        if isinstance(exc, EndpointConnectionError | ConnectionClosedError | ReadTimeoutError):
            return PublishError(
                f"cannot reach S3 at {endpoint} ({type(exc).__name__}); check "
                "WARRANT_AWS_ENDPOINT / AWS_ENDPOINT_URL, the region and the network"
            )
        return PublishError(f"writing {target.uri} failed: {type(exc).__name__}: {exc}")


def _refused(code: str, target: PublishedObject, endpoint: str) -> PublishError:
    """What to fix when S3 answered with an error code."""
    if code == "NoSuchBucket":
        return PublishError(
            f"S3 bucket {target.bucket!r} does not exist (NoSuchBucket at {endpoint}); "
            "create it, or fix --s3-bucket / WARRANT_PUBLISH_S3_BUCKET"
        )
    if code in _DENIED:
        return PublishError(
            f"S3 refused to write {target.uri} ({code}): the AWS identity Warrant runs as "
            f"needs s3:PutObject on arn:aws:s3:::{target.bucket}/{target.key}"
        )
    if code in _BAD_CREDENTIALS:
        return PublishError(
            f"S3 rejected the AWS credentials ({code}) writing {target.uri}; check the "
            "credentials Warrant runs with (environment, profile, pod or instance role)"
        )
    return PublishError(f"S3 refused to write {target.uri} ({code})")


async def load_documents(
    store: KeyStore, *, issuer_url: str, max_age: int
) -> tuple[StaticDocument, StaticDocument]:
    """Discovery and JWKS exactly as a service with these settings serves them (built by the
    same KeyRing). Refuses an empty key set: publishing it would break every verifier."""
    keyring = KeyRing(store, issuer_url=issuer_url, max_age=max_age)
    await keyring.refresh()
    if not keyring.snapshot.published():
        raise PublishError(
            "the key store has no published keys yet; start 'warrant serve' once (it creates "
            "the first keys), then publish"
        )
    return keyring.discovery, keyring.jwks


class AutoPublisher:
    """Publishes whenever the documents served differ from the ones last published, and retries
    a failed publish after RETRY_DELAY. Owns its S3 client; `close()` releases it."""

    def __init__(
        self,
        target: PublishTarget,
        *,
        issuer_url: str,
        endpoint_url: str | None,
        clock: Callable[[], datetime],
        session: AioSession | None = None,
    ) -> None:
        self._target = target
        self._issuer_url = issuer_url
        self._endpoint_url = endpoint_url
        self._clock = clock
        self._session = session
        self._stack = contextlib.AsyncExitStack()
        self._publisher: S3Publisher | None = None
        self._published: tuple[str, str] | None = None  # ETags of the last published pair
        self._retry_at: datetime | None = None

    async def sync(self, discovery: StaticDocument, jwks: StaticDocument) -> bool:
        """Publish if needed; True when it wrote. Failures are logged, never raised: the live
        listener keeps serving, and the next call after RETRY_DELAY tries again."""
        wanted = (discovery.etag, jwks.etag)
        if wanted == self._published:
            return False
        now = self._clock()
        if self._retry_at is not None and now < self._retry_at:
            return False
        try:
            written = await (await self._publisher_now()).publish(discovery, jwks)
        except PublishError as exc:
            self._retry_at = now + RETRY_DELAY
            log.error(
                "publishing discovery and JWKS to S3 failed, retrying in %d s: %s",
                int(RETRY_DELAY.total_seconds()),
                exc,
            )
            return False
        self._published, self._retry_at = wanted, None
        log.info("published %s", ", ".join(obj.uri for obj in written))
        return True

    async def close(self) -> None:
        self._publisher = None
        await self._stack.aclose()

    async def _publisher_now(self) -> S3Publisher:
        if self._publisher is None:
            client = await self._open_client()
            self._publisher = S3Publisher(
                client,
                bucket=self._target.bucket,
                prefix=self._target.prefix,
                issuer_url=self._issuer_url,
            )
        return self._publisher

    async def _open_client(self) -> S3Client:
        # The SDK and S3's data load off the loop: see keys.botocore_lazy.
        try:
            self._session = await session_for("s3", reuse=self._session)
        except call_errors() as exc:  # the configuration is read here first
            raise PublishError(setup_problem(exc, "S3")) from exc
        client: S3Client = await self._stack.enter_async_context(
            open_s3_client(self._endpoint_url, self._session)
        )
        return client
