"""The gate: every request botocore sends to the endpoint comes here first.

AssumeRoleWithWebIdentity and AssumeRole are checked (web_identity.py, assume_role.py) and only
then forwarded to moto; everything else is forwarded unchanged, except that a request signed
with keys the gate saw issued must carry the right session token, be unexpired and, for query
calls (`POST /`), be correctly signed. Injected faults come first; every outcome is counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import httpx
from aiobotocore.session import AioSession

from broker.standin.assume_role import AssumeRoleExchange
from broker.standin.errors import StsError, error_xml, validation_error
from broker.standin.faults import Faults
from broker.standin.forward import MotoForwarder, Relayed, moto_client
from broker.standin.iam import IamDirectory, MotoIamDirectory
from broker.standin.idp import IdpKeys
from broker.standin.model import Clock, utc_now
from broker.standin.options import GateOptions
from broker.standin.principals import PrincipalRegistry
from broker.standin.query import (
    ASSUME_ROLE,
    ASSUME_ROLE_WITH_WEB_IDENTITY,
    IncomingRequest,
    QueryRequest,
)
from broker.standin.sessions import SessionIssuer
from broker.standin.sigv4 import access_key_id
from broker.standin.stats import Stats
from broker.standin.web_identity import WebIdentityExchange

__all__ = ["Gate", "open_gate"]

log = logging.getLogger(__name__)


def _is_query_call(request: IncomingRequest) -> bool:
    content_type = (request.header("content-type") or "").lower()
    return (
        request.method == "POST"
        and request.raw_path == "/"
        and content_type.startswith("application/x-www-form-urlencoded")
    )


class Gate:
    def __init__(
        self,
        *,
        iam: IamDirectory,
        keys: IdpKeys,
        forwarder: MotoForwarder,
        principals: PrincipalRegistry,
        faults: Faults,
        stats: Stats,
        options: GateOptions,
        clock: Clock,
    ) -> None:
        sessions = SessionIssuer(forwarder, principals, clock, options.credential_lifetime)
        self.keys = keys
        self.principals = principals
        self.faults = faults
        self.stats = stats
        self.options = options
        self._forwarder = forwarder
        self._web_identity = WebIdentityExchange(
            iam=iam,
            keys=keys,
            sessions=sessions,
            clock=clock,
            allow_http_issuers=options.allow_http_issuers,
        )
        self._assume_role = AssumeRoleExchange(iam=iam, principals=principals, sessions=sessions)

    def reset(self) -> None:
        """Forget stats, faults and cached IdP documents; issued sessions stay valid."""
        self.stats.clear()
        self.faults.clear()
        self.keys.clear()

    async def handle(self, request: IncomingRequest) -> Relayed:
        query = QueryRequest.parse(request)
        action = query.action
        request_id = str(uuid.uuid4())
        try:
            relayed = await self._dispatch(request, query)
        except StsError as error:
            log.info("%s refused: %s", action, error.code)
            self.stats.count(action, error.code)
            return _error(error, request_id)
        except Exception:
            log.exception("%s failed inside the stand-in", action)
            self.stats.count(action, "InternalFailure")
            failure = StsError(
                "InternalFailure", "The stand-in failed; see its log", status=500, sender=False
            )
            return _error(failure, request_id)
        self.stats.count(action, "ok" if relayed.status < 400 else f"HTTP {relayed.status}")
        return relayed

    async def _dispatch(self, request: IncomingRequest, query: QueryRequest) -> Relayed:
        fault = self.faults.take(query.action)
        if isinstance(fault, StsError):
            raise fault
        if fault is not None:
            await asyncio.sleep(fault)  # a slow answer, otherwise as usual
        if query.action == ASSUME_ROLE_WITH_WEB_IDENTITY:
            return await self._web_identity(request, query)
        if query.action == ASSUME_ROLE:
            return await self._assume_role(request, query)
        return await self._pass_through(request, query)

    async def _pass_through(self, request: IncomingRequest, query: QueryRequest) -> Relayed:
        key = access_key_id(request)
        principal = None if key is None else self.principals.get(key)
        if principal is not None:
            self.principals.check(principal, request, verify_signature=_is_query_call(request))
        if query.action == "CreateOpenIDConnectProvider" and not self.options.allow_http_issuers:
            url = query.get("Url") or ""
            if urlsplit(url).scheme != "https":
                # moto accepts any scheme; IAM only https (aws-facts §1.1).
                raise validation_error(
                    "Invalid Open ID Connect Provider URL: it must begin with https:// "
                    "(start the stand-in with allow_http_issuers for a local dev issuer)"
                )
        return await self._forwarder.forward(request)


def _error(error: StsError, request_id: str) -> Relayed:
    headers = (("content-type", "text/xml"), ("x-amzn-requestid", request_id))
    return Relayed(error.status, headers, error_xml(error, request_id))


@contextlib.asynccontextmanager
async def open_gate(
    moto_url: str, options: GateOptions | None = None, clock: Clock = utc_now
) -> AsyncIterator[Gate]:
    """A gate in front of the moto server at `moto_url`, with its HTTP and IAM clients open."""
    options = options or GateOptions()
    if options.allow_http_issuers:
        log.warning(
            "allow_http_issuers is on: tokens from http:// issuers are accepted, which AWS never "
            "does. Local development only."
        )
    async with contextlib.AsyncExitStack() as stack:
        moto_http = await stack.enter_async_context(moto_client())
        idp_http = await stack.enter_async_context(
            httpx.AsyncClient(
                timeout=httpx.Timeout(options.idp_timeout.total_seconds()), trust_env=False
            )
        )
        iam = await stack.enter_async_context(MotoIamDirectory(AioSession(), moto_url))
        yield Gate(
            iam=iam,
            keys=IdpKeys(
                idp_http, clock, allow_http=options.allow_http_issuers, timeout=options.idp_timeout
            ),
            forwarder=MotoForwarder(moto_http, moto_url),
            principals=PrincipalRegistry(clock),
            faults=Faults(),
            stats=Stats(),
            options=options,
            clock=clock,
        )
