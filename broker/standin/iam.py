"""What the gate reads from IAM: OIDC providers and roles, looked up in moto over HTTP with
aiobotocore, in the account that owns the role, like STS does (aws-facts §1.1: the role and the
provider must be in the same account)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, Protocol
from urllib.parse import unquote

from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession
from botocore.exceptions import ClientError

from broker.standin.model import OidcProvider, Role, RoleArn

__all__ = ["IamDirectory", "MotoIamDirectory", "provider_url"]

# moto answers on loopback in milliseconds; a slow answer means it is wedged, not busy.
CONNECT_TIMEOUT = timedelta(seconds=2)
READ_TIMEOUT = timedelta(seconds=5)
# The gate's own IAM calls carry static dummy keys, never the environment's: moto does not check
# them, and picking up real credentials from the environment must be impossible.
DUMMY_ACCESS_KEY = "AKIASTANDINGATE00000"
DUMMY_SECRET_KEY = "standin-gate-dummy-secret"  # noqa: S105 - a placeholder moto never checks
IAM_REGION = "us-east-1"


def provider_url(issuer: str) -> str:
    """The URL as IAM stores it: the issuer without its scheme (`https://` or, for dev
    issuers, `http://`)."""
    for scheme in ("https://", "http://"):
        if issuer.startswith(scheme):
            return issuer[len(scheme) :]
    return issuer


class IamDirectory(Protocol):
    async def oidc_provider(self, account_id: str, issuer: str) -> OidcProvider | None:
        """The provider registered in `account_id` for `issuer`; None when there is none."""
        ...

    async def role(self, arn: RoleArn) -> Role | None:
        """The role with exactly this ARN (path included); None when there is none."""
        ...


class MotoIamDirectory:
    """One aiobotocore IAM client per account, each pinned to its account with moto's
    `x-moto-account-id` header. Use as an async context manager."""

    def __init__(self, session: AioSession, endpoint_url: str) -> None:
        self._session = session
        self._endpoint_url = endpoint_url
        self._stack = contextlib.AsyncExitStack()
        self._clients: dict[str, Any] = {}

    async def __aenter__(self) -> MotoIamDirectory:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._stack.aclose()
        self._clients.clear()

    async def _client(self, account_id: str) -> Any:
        if account_id not in self._clients:
            config = AioConfig(
                connect_timeout=CONNECT_TIMEOUT.total_seconds(),
                read_timeout=READ_TIMEOUT.total_seconds(),
                retries={"max_attempts": 2, "mode": "standard"},
            )
            created = await self._stack.enter_async_context(
                self._session.create_client(
                    "iam",
                    region_name=IAM_REGION,
                    endpoint_url=self._endpoint_url,
                    aws_access_key_id=DUMMY_ACCESS_KEY,
                    aws_secret_access_key=DUMMY_SECRET_KEY,
                    config=config,
                )
            )

            def pin_account(request: Any, **_: Any) -> None:
                request.headers["x-moto-account-id"] = account_id

            created.meta.events.register("before-sign.iam", pin_account)
            self._clients[account_id] = created
        return self._clients[account_id]

    async def oidc_provider(self, account_id: str, issuer: str) -> OidcProvider | None:
        client = await self._client(account_id)
        url = provider_url(issuer)
        listed = await client.list_open_id_connect_providers()
        for entry in listed.get("OpenIDConnectProviderList", []):
            arn = str(entry["Arn"])
            if arn.split(":oidc-provider/", 1)[-1] != url:
                continue
            try:
                found = await client.get_open_id_connect_provider(OpenIDConnectProviderArn=arn)
            except ClientError as exc:
                if _code(exc) in {"NoSuchEntity", "NotFoundException"}:
                    return None
                raise
            return OidcProvider(
                arn=arn,
                url=str(found["Url"]),
                client_ids=tuple(str(c) for c in found.get("ClientIDList", [])),
            )
        return None

    async def role(self, arn: RoleArn) -> Role | None:
        client = await self._client(arn.account_id)
        try:
            found = (await client.get_role(RoleName=arn.name))["Role"]
        except ClientError as exc:
            if _code(exc) == "NoSuchEntity":
                return None
            raise
        if found["Arn"] != arn.arn:
            return None  # same name, different path: not the role that was asked for
        return Role(
            arn=arn,
            trust_policy=_policy(found.get("AssumeRolePolicyDocument", {})),
            max_session_duration=int(found.get("MaxSessionDuration", 3600)),
        )


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _policy(document: object) -> Mapping[str, Any]:
    """botocore decodes policy documents into dicts; raw (URL-encoded) JSON is handled too."""
    if isinstance(document, str):
        document = json.loads(unquote(document))
    if not isinstance(document, dict):
        raise TypeError("the role's trust policy is not a JSON object")
    return document
