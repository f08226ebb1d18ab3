"""KmsCustodian: signing keys created, disabled and deleted in AWS KMS.

Lifecycle in KMS, following the record's:
    created   CreateKey (KeyUsage SIGN_VERIFY, RSA_2048 or ECC_NIST_P256, tagged
              warrant:managed-by=warrant), GetPublicKey (the kid), TagResource
              (warrant:kid=<kid>) and CreateAlias alias/warrant/<kid>, so an operator can tell
              Warrant's keys apart and find each one by kid
    retired   DisableKey once the retirement is committed: it can never sign again
    revoked   DisableKey likewise
    removed   ScheduleKeyDeletion with the minimum 7-day window, before the record goes

KmsConnection owns the one aiobotocore client every signer shares, opened on first use.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING

from keys.botocore_lazy import call_errors, session_for, setup_problem
from keys.custody import Custody, HeldKey, KmsHalf, PrivateHalf
from keys.errors import KeysError
from keys.kms import KMS_SPECS, KmsError, KmsSigner, kms_errors, kms_public_jwk
from keys.model import Algorithm, KeyRecord
from keys.protocols import Signer

if TYPE_CHECKING:
    from typing import Unpack

    from aiobotocore.session import AioSession
    from types_aiobotocore_kms import KMSClient
    from types_aiobotocore_kms.type_defs import (
        GetPublicKeyRequestTypeDef,
        GetPublicKeyResponseTypeDef,
        SignRequestTypeDef,
        SignResponseTypeDef,
        TagTypeDef,
    )

__all__ = [
    "ALIAS_PREFIX",
    "DELETION_WINDOW_DAYS",
    "MANAGED_BY_TAG",
    "KmsConnection",
    "KmsCustodian",
]

log = logging.getLogger(__name__)

# KMS answers Sign in tens of milliseconds; no connection after 2 s means the network is broken,
# and a minting request should fail fast rather than hang behind it.
CONNECT_TIMEOUT = timedelta(seconds=2)
# Sign and GetPublicKey answer well under a second; 5 s covers a slow moment, not an outage.
READ_TIMEOUT = timedelta(seconds=5)
# botocore's "standard" mode retries throttling and 5xx with jitter; 3 attempts absorb a blip
# while keeping a failing mint under ~15 s.
MAX_ATTEMPTS = 3
# AWS's minimum waiting period: a key Warrant removed is recoverable for a week, no longer.
DELETION_WINDOW_DAYS = 7
ALIAS_PREFIX = "alias/warrant/"
MANAGED_BY_TAG = ("warrant:managed-by", "warrant")
KID_TAG = "warrant:kid"
DESCRIPTION = "Warrant OIDC token signing key ({alg}); managed by Warrant: do not use elsewhere"


class KmsConnection:
    """One long-lived aiobotocore KMS client, opened on first use (on the running event loop)
    and closed by `aclose`. Satisfies KmsSigningApi, so every KmsSigner can share it."""

    def __init__(
        self,
        *,
        region: str,
        endpoint_url: str | None = None,
        session: AioSession | None = None,
    ) -> None:
        self._region = region
        self._endpoint_url = endpoint_url  # WARRANT_KMS_ENDPOINT: moto in the tests
        self._session = session  # made at the first client: see keys.botocore_lazy
        self._stack = contextlib.AsyncExitStack()
        self._client: KMSClient | None = None
        self._lock = asyncio.Lock()
        self._closed = False

    @property
    def region(self) -> str:
        return self._region

    async def client(self) -> KMSClient:
        if self._client is not None:
            return self._client
        async with self._lock:
            if self._closed:
                raise KeysError("the KMS connection is closed")
            if self._client is None:
                try:
                    self._client = await self._open()
                except call_errors() as exc:  # an unparseable AWS_CONFIG_FILE, say
                    raise KmsError(setup_problem(exc, "KMS")) from exc
            return self._client

    async def _open(self) -> KMSClient:
        self._session = await session_for("kms", reuse=self._session)
        from aiobotocore.config import AioConfig  # noqa: PLC0415 - see keys.botocore_lazy

        config = AioConfig(
            connect_timeout=CONNECT_TIMEOUT.total_seconds(),
            read_timeout=READ_TIMEOUT.total_seconds(),
            retries={"total_max_attempts": MAX_ATTEMPTS, "mode": "standard"},
        )
        client: KMSClient = await self._stack.enter_async_context(
            self._session.create_client(
                "kms", region_name=self._region, endpoint_url=self._endpoint_url, config=config
            )
        )
        return client

    async def sign(self, **kwargs: Unpack[SignRequestTypeDef]) -> SignResponseTypeDef:
        return await (await self.client()).sign(**kwargs)

    async def get_public_key(
        self, **kwargs: Unpack[GetPublicKeyRequestTypeDef]
    ) -> GetPublicKeyResponseTypeDef:
        return await (await self.client()).get_public_key(**kwargs)

    async def aclose(self) -> None:
        async with self._lock:
            self._closed = True
            self._client = None
            await self._stack.aclose()

    def __repr__(self) -> str:
        return f"KmsConnection(region={self._region!r}, endpoint_url={self._endpoint_url!r})"


class KmsCustodian:
    """Custodian whose private keys live in AWS KMS. `tags` are added to every key it creates
    (e.g. warrant:issuer), besides warrant:managed-by and warrant:kid."""

    def __init__(self, connection: KmsConnection, *, tags: Mapping[str, str] | None = None) -> None:
        self._kms = connection
        self._tags = dict(tags or {})

    @property
    def custody(self) -> Custody:
        return Custody.KMS

    async def create(self, alg: Algorithm) -> HeldKey:
        spec = KMS_SPECS[alg]
        client = await self._kms.client()
        tags: list[TagTypeDef] = [{"TagKey": MANAGED_BY_TAG[0], "TagValue": MANAGED_BY_TAG[1]}]
        tags += [{"TagKey": k, "TagValue": v} for k, v in sorted(self._tags.items())]
        with kms_errors("CreateKey"):
            created = await client.create_key(
                KeyUsage="SIGN_VERIFY",
                KeySpec=spec.key_spec,
                Description=DESCRIPTION.format(alg=alg.value),
                Tags=tags,
            )
        key_id = created["KeyMetadata"]["Arn"]
        try:
            jwk = await kms_public_jwk(client, key_id, alg)
            kid = jwk["kid"]
            with kms_errors("TagResource", key_id):
                await client.tag_resource(KeyId=key_id, Tags=[{"TagKey": KID_TAG, "TagValue": kid}])
            with kms_errors("CreateAlias", key_id):
                await client.create_alias(AliasName=ALIAS_PREFIX + kid, TargetKeyId=key_id)
        except KeysError:
            await self._abandon(key_id)
            raise
        log.info("created KMS key %s for kid %s", key_id, kid)
        return HeldKey(alg=alg, public_jwk=jwk, half=KmsHalf(key_id=key_id))

    def signer(self, record: KeyRecord, half: PrivateHalf) -> Signer:
        if not isinstance(half, KmsHalf):
            raise KeysError(f"key {record.kid} is not held in KMS")
        return KmsSigner(self._kms, key_id=half.key_id, kid=record.kid, alg=record.alg)

    async def retire(self, kid: str, half: PrivateHalf) -> None:
        key_id = _key_id(kid, half)
        with kms_errors("DisableKey", key_id):
            await (await self._kms.client()).disable_key(KeyId=_bare_id(key_id))
        log.info("disabled KMS key %s of retired kid %s", key_id, kid)

    async def destroy(self, kid: str, half: PrivateHalf) -> None:
        key_id = _key_id(kid, half)
        client = await self._kms.client()
        try:
            with kms_errors("ScheduleKeyDeletion", key_id):
                await client.schedule_key_deletion(
                    KeyId=_bare_id(key_id), PendingWindowInDays=DELETION_WINDOW_DAYS
                )
        except KmsError as exc:
            # Already pending deletion (an earlier attempt whose removal was not committed), or
            # already deleted: the key is going, which is all this call wants.
            if exc.code not in {"KMSInvalidStateException", "NotFoundException"}:
                raise
            log.info("KMS key %s of kid %s is already deleted or pending deletion", key_id, kid)
            return
        log.info(
            "scheduled deletion of KMS key %s (kid %s) in %d days",
            key_id,
            kid,
            DELETION_WINDOW_DAYS,
        )

    async def aclose(self) -> None:
        await self._kms.aclose()

    async def _abandon(self, key_id: str) -> None:
        """A key that never got a record: schedule its deletion, or say where it is."""
        try:
            await self.destroy("(none)", KmsHalf(key_id))
        except KeysError as exc:
            log.error(
                "KMS key %s was created but not recorded, and scheduling its deletion failed "
                "(%s); delete it by hand (it is tagged %s=%s)",
                key_id,
                exc,
                *MANAGED_BY_TAG,
            )

    def __repr__(self) -> str:
        return f"KmsCustodian({self._kms!r})"


def _bare_id(key_id: str) -> str:
    """The key id of a key ARN. KMS takes either for every call, but moto (the tests' KMS)
    takes only the bare id for DisableKey and ScheduleKeyDeletion."""
    return key_id.rpartition(":key/")[2] if key_id.startswith("arn:") else key_id


def _key_id(kid: str, half: PrivateHalf) -> str:
    if not isinstance(half, KmsHalf):
        raise KeysError(f"key {kid} is not held in KMS")
    return half.key_id
