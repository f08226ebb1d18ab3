"""The broker's use cases, free of transport code: integrations, sandboxes and vending.

HTTP and gRPC only translate to and from these calls. Every credential leaves this module only
after its audit record is durably written.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from cachetools import TTLCache

from broker.cache import CachedSource
from broker.connection import ConnectionReport, ConnectionTester, Progress
from broker.connection_store import SqlConnectionStore
from broker.errors import BrokerError, CredentialsRejected, CredentialsUnavailable
from broker.integrations import IntegrationStore
from broker.model import (
    AwsCredentials,
    CredentialRequest,
    Delivery,
    Integration,
    Method,
    Sandbox,
)
from broker.sandboxes import CachedSandboxAuth, SandboxStore
from broker.session_name import session_name
from broker.settings import BrokerSettings
from broker.setup import Format, PolicyChoice, Profile, SetupOutput, generate, trust_policy
from broker.setup.policies import guarded_session_policy
from broker.validation import session_policy as validate_session_policy
from broker.validation import ttl_seconds as validate_ttl
from issuer.audit import AuditEvent, AuditLog
from issuer.errors import BadRequest, IssuerError, NotFound, Unauthenticated
from issuer.http import iso
from issuer.metrics import Metrics
from issuer.singleflight import SingleFlight
from issuer.tenants import TenantStore, audience_for, validate_slug

log = logging.getLogger(__name__)

# The vend hot path must not query the database for the integration of every request; a removal
# in this process invalidates at once, another process's removal is seen within this.
INTEGRATION_CACHE_TTL = timedelta(seconds=2)
# Sandbox creation's cache of integrations by name or id: correct whatever its age (see
# BrokerService.create_sandbox); the TTL only bounds how long an entry is kept.
KNOWN_INTEGRATION_TTL = timedelta(minutes=10)


@dataclass(frozen=True, slots=True)
class SandboxGrant:
    """What a new sandbox receives. `env` may hold a secret: show it once, never log it."""

    sandbox: Sandbox
    env: dict[str, str] = field(repr=False)
    credentials_expire_at: datetime | None = None


class BrokerService:
    def __init__(
        self,
        *,
        tenants: TenantStore,
        integrations: IntegrationStore,
        sandboxes: SandboxStore,
        sandbox_auth: CachedSandboxAuth,
        source: CachedSource,
        audit: AuditLog,
        clock: Callable[[], datetime],
        settings: BrokerSettings,
        metrics: Metrics,
        issuer_url: str,
        dev: bool,
        tester: ConnectionTester | None = None,
        connections: SqlConnectionStore | None = None,
    ) -> None:
        self._tester = tester
        self._connections = connections
        self._issuer_url = issuer_url
        self._dev = dev
        self._metrics = metrics
        self._tenants = tenants
        self._integrations = integrations
        self._sandboxes = sandboxes
        self._auth = sandbox_auth
        self._source = source
        self._audit = audit
        self._clock = clock
        self._settings = settings
        self._integration_flights: SingleFlight[str, Integration] = SingleFlight()
        self._cleanups: set[asyncio.Task[None]] = set()  # held: running tasks are weak refs
        # What sandbox creation resolved (tenant, name or id) to. Integrations never change, and
        # the sandbox's insert checks in its own transaction that the integration still exists
        # and is the tenant's, so this cache can only be stale about removals: see create_sandbox.
        self._lookups: SingleFlight[tuple[str, str], Integration] = SingleFlight()
        self._known_integrations: TTLCache[tuple[str, str], Integration] = TTLCache(
            maxsize=10_000, ttl=KNOWN_INTEGRATION_TTL.total_seconds(), timer=time.monotonic
        )
        self._integration_cache: TTLCache[str, Integration] = TTLCache(
            maxsize=10_000, ttl=INTEGRATION_CACHE_TTL.total_seconds(), timer=time.monotonic
        )
        self._lookups_known = metrics.integration_lookups.labels("known")
        self._lookups_database = metrics.integration_lookups.labels("database")
        self._lookups_stale = metrics.integration_lookups.labels("stale")
        self._vends_ok = metrics.vends.labels("ok")
        self._vends_error = metrics.vends.labels("error")
        self._vends_denied = metrics.vends.labels("denied")

    # -- integrations (admin) -------------------------------------------------------------

    async def add_integration(
        self, tenant: str, fields: dict[str, Any], *, request_id: str | None = None
    ) -> Integration:
        if fields.get("session_policy") is not None:
            guarded_session_policy(validate_session_policy(fields["session_policy"]))
        integration = await self._integrations.add(validate_slug(tenant), **fields)
        await self._audit.write(self._integration_event("integration.add", integration, request_id))
        return integration

    def _forget_integration(self, integration_id: str) -> None:
        """Drop every name or id this process knew the integration by."""
        for key, known in list(self._known_integrations.items()):
            if known.id == integration_id:
                self._known_integrations.pop(key, None)

    async def list_integrations(self, tenant: str) -> list[Integration]:
        slug = validate_slug(tenant)
        await self._tenants.get(slug)
        return await self._integrations.list(slug)

    async def get_integration(self, tenant: str, ref: str) -> Integration:
        return await self._integrations.get(validate_slug(tenant), ref)

    async def remove_integration(
        self, tenant: str, ref: str, *, request_id: str | None = None
    ) -> tuple[Integration, list[str]]:
        """Removes the integration, revokes its sandboxes at once and drops cached sessions."""
        integration = await self._integrations.get(validate_slug(tenant), ref)
        revoked = await self._sandboxes.revoke_for_integration(integration.id)
        for sandbox_id in revoked:
            self._auth.invalidate(sandbox_id)
        await self._integrations.remove(integration.tenant, integration.id)
        self._integration_cache.pop(integration.id, None)
        self._forget_integration(integration.id)
        self._source.evict(integration_id=integration.id)
        await self._audit.write(
            self._integration_event(
                "integration.remove", integration, request_id, f"revoked {len(revoked)} sandboxes"
            )
        )
        return integration, revoked

    async def setup_for(
        self,
        tenant: str,
        ref: str,
        *,
        format: Format,  # the CLI option's and query parameter's name
        profile: Profile | None = None,
        policy: PolicyChoice = PolicyChoice.PROFILE,
        warrant_principal_arn: str | None = None,
    ) -> SetupOutput:
        """What the customer's admin runs to connect this integration, and to disconnect it."""
        integration = await self._integrations.get(validate_slug(tenant), ref)
        return generate(
            integration,
            issuer_url=self._issuer_url,
            format=format,
            profile=profile or Profile(integration.profile),
            policy=policy,
            warrant_principal_arn=warrant_principal_arn,
            now=self._clock(),
            dev=self._dev,
        )

    async def remove_tenant(
        self, tenant: str, *, request_id: str | None = None
    ) -> tuple[list[Integration], list[str]]:
        """Disconnect a whole tenant: every integration's sandboxes are revoked at once and its
        cached sessions dropped, then the tenant is removed (its rows go with it)."""
        slug = validate_slug(tenant)
        await self._tenants.get(slug)
        removed: list[Integration] = []
        revoked: list[str] = []
        for integration in await self._integrations.list(slug):
            _, sandboxes = await self.remove_integration(
                slug, integration.id, request_id=request_id
            )
            removed.append(integration)
            revoked.extend(sandboxes)
        await self._tenants.remove(slug)
        await self._audit.write(
            AuditEvent(
                event="tenant.remove",
                outcome="ok",
                tenant=slug,
                request_id=request_id,
                detail=f"removed {len(removed)} integrations, revoked {len(revoked)} sandboxes",
            )
        )
        return removed, revoked

    async def test_integration(
        self,
        tenant: str,
        ref: str,
        *,
        profile: Profile | None = None,
        progress: Progress | None = None,
        request_id: str | None = None,
    ) -> ConnectionReport:
        """Obtain credentials the real way, check the account, probe the profile's capabilities;
        store and audit the report."""
        if self._tester is None or self._connections is None:
            raise BrokerError("test connection is not configured in this process")
        integration = await self._integrations.get(validate_slug(tenant), ref)
        report = await self._tester.test(
            self._request(integration, None), profile or Profile(integration.profile), progress
        )
        if report.status == "failed" and integration.method is Method.OIDC:
            report = replace(report, diagnosis=self._diagnose(integration))
        await self._connections.save(report)
        await self._audit.write(
            AuditEvent(
                event="integration.test",
                outcome="ok" if report.status == "active" else "error",
                tenant=integration.tenant,
                integration=integration.id,
                role_arn=integration.role_arn,
                request_id=request_id,
                detail=report.error
                or f"{sum(c.status == 'allowed' for c in report.capabilities)}"
                f"/{len(report.capabilities)} capabilities allowed",
            )
        )
        return report

    def _diagnose(self, integration: Integration) -> dict[str, Any]:
        """Our token's claims next to what the customer's account must contain for them."""
        host = self._issuer_url.split("://", 1)[-1]
        partition = integration.role_arn.split(":", 2)[1]
        return {
            "token": {
                "iss": self._issuer_url,
                "aud": audience_for(integration.tenant),
                "sub": f"tenant:{integration.tenant}:{integration.id}",
            },
            "provider": {
                "url": self._issuer_url,
                "arn": f"arn:{partition}:iam::{integration.account_id}:oidc-provider/{host}",
                "client_ids_must_include": audience_for(integration.tenant),
            },
            "role_trust_policy_must_be": trust_policy(integration, self._issuer_url, dev=self._dev),
            "fix": f"run 'warrant setup {integration.tenant} {integration.id}' for the exact "
            "commands; the provider URL must equal iss byte for byte (no trailing slash)",
        }

    async def last_test(self, tenant: str, ref: str) -> ConnectionReport:
        if self._connections is None:
            raise BrokerError("test connection is not configured in this process")
        integration = await self._integrations.get(validate_slug(tenant), ref)
        report = await self._connections.get(integration.id)
        if report is None:
            raise NotFound(
                f"integration {integration.id} has not been tested yet; POST to "
                f".../integrations/{integration.id}/test"
            )
        return report

    # -- sandboxes (agent) ----------------------------------------------------------------

    async def create_sandbox(
        self,
        *,
        tenant: str,
        integration_ref: str,
        ttl_seconds: int | None,
        session_policy: str | None,
        delivery: Delivery,
        request_id: str | None = None,
    ) -> SandboxGrant:
        slug = validate_slug(tenant)
        key = (slug, integration_ref)
        known = self._known_integrations.get(key)
        if known is not None:
            self._lookups_known.inc()
            try:
                return await self._create_sandbox(
                    known, ttl_seconds, session_policy, delivery, request_id
                )
            except NotFound:
                # Removed since we looked it up, perhaps its name given to a new integration,
                # by another replica (this one forgets at once): the database says which.
                self._lookups_stale.inc()
                self._forget_integration(known.id)
        self._lookups_database.inc()
        # One query however many creations arrive together (a stampede of new sandboxes).
        integration = await self._lookups.do(
            key, lambda: self._integrations.get(slug, integration_ref)
        )
        self._known_integrations[key] = integration
        return await self._create_sandbox(
            integration, ttl_seconds, session_policy, delivery, request_id
        )

    async def _create_sandbox(
        self,
        integration: Integration,
        ttl_seconds: int | None,
        session_policy: str | None,
        delivery: Delivery,
        request_id: str | None,
    ) -> SandboxGrant:
        policy = validate_session_policy(session_policy)
        guarded_session_policy(policy)  # fits with the read-only guard, or BadRequest
        if policy is not None and integration.session_policy is not None:
            raise BadRequest(
                "this integration already has a session_policy; a sandbox cannot replace it "
                "(that could only broaden access). Omit session_policy or use another integration"
            )
        s = self._settings
        ttl = validate_ttl(
            ttl_seconds,
            default=int(s.sandbox_default_ttl.total_seconds()),
            minimum=60,
            maximum=int(s.sandbox_max_ttl.total_seconds()),
        )
        if delivery is Delivery.ENV:
            return await self._create_env_sandbox(integration, ttl, policy, request_id)
        # Obtain (and cache) the session before handing out the token: a broken integration
        # fails here, with STS's reason and a hint, for the trusted caller, rather than later
        # inside the sandbox. A sandbox without a policy of its own shares the integration's
        # session, which does not depend on it: that fetch (an STS call when cold) runs while
        # the sandbox row is written, and completes (cached) even if the row cannot be.
        shared = None if policy is not None else self._shared_fetch(integration)
        sandbox, token = await self._sandboxes.create(
            tenant=integration.tenant,
            integration_id=integration.id,
            delivery=delivery,
            ttl=timedelta(seconds=ttl),
            session_policy=policy,
        )
        if token is None:  # container delivery always has a token
            raise BrokerError("sandbox store returned no token for a container sandbox")
        recorded = self._record_creation(sandbox, integration, request_id)
        try:
            if shared is not None:
                await shared
            else:
                await self._source.fetch(self._request(integration, policy, sandbox.id))
            await recorded
        except BaseException as exc:
            await self._finished(self._abandon(sandbox, recorded, exc, request_id))
            if isinstance(exc, CredentialsRejected) and integration.method is Method.OIDC:
                exc.details["diagnosis"] = self._diagnose(integration)
            raise
        env = {
            "AWS_CONTAINER_CREDENTIALS_FULL_URI": s.sandbox_url,
            "AWS_CONTAINER_AUTHORIZATION_TOKEN": token,
            "AWS_REGION": integration.region,
            "AWS_DEFAULT_REGION": integration.region,
            # The sandbox must never reach the host's instance role through IMDS.
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        return SandboxGrant(sandbox=sandbox, env=env)

    def _record_creation(
        self, sandbox: Sandbox, integration: Integration, request_id: str | None
    ) -> asyncio.Task[None]:
        """Start the sandbox's `sandbox.create` record at once: it becomes durable while the
        credentials are fetched (its sync overlaps the STS call instead of following it). The
        caller awaits it before the sandbox's token or credentials leave, so no sandbox is handed
        out without its record; one whose credentials cannot be had is then `_abandon`ed."""
        task = asyncio.create_task(
            self._audit.write(
                self._sandbox_event("sandbox.create", sandbox, integration, request_id)
            )
        )
        task.add_done_callback(_retrieve)
        return task

    async def _finished(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` to its end even if the caller is cancelled meanwhile (gRPC cancels a call's
        handler again when its deadline passes, after the deadline's own cancellation): the
        clean-up of a half-made sandbox must never stop half-way."""
        task = asyncio.create_task(work)
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)
        await asyncio.shield(task)

    async def _abandon(
        self,
        sandbox: Sandbox,
        recorded: asyncio.Task[None],
        exc: BaseException,
        request_id: str | None,
    ) -> None:
        """A sandbox that could not get its credentials, or whose creation could not be
        recorded, is revoked at once: it never lives. When its `sandbox.create` record was
        written, a `sandbox.delete` record (outcome error, with the reason) follows it, so the
        log never shows a sandbox created and not ended. `exc` is what the caller re-raises;
        only the revocation itself may raise instead (the database is down)."""
        await self._sandboxes.revoke(sandbox.id)
        try:
            await asyncio.shield(recorded)
        except BaseException:  # the audit log is down (or we are being cancelled): no record
            return
        reason = exc.message if isinstance(exc, IssuerError) else _abandon_reason(exc)
        try:
            await self._audit.write(
                replace(
                    self._sandbox_event("sandbox.delete", sandbox, None, request_id),
                    outcome="error",
                    detail=f"revoked at creation: {reason}",
                )
            )
        except Exception as audit_exc:  # the log failed between the two records
            log.warning("sandbox %s: revocation not recorded: %s", sandbox.id, audit_exc)

    def _shared_fetch(self, integration: Integration) -> asyncio.Task[AwsCredentials]:
        task = asyncio.create_task(self._source.fetch(self._request(integration, None)))
        task.add_done_callback(_retrieve)  # nobody awaits it when the row cannot be written
        return task

    async def _create_env_sandbox(
        self, integration: Integration, ttl: int, policy: str | None, request_id: str | None
    ) -> SandboxGrant:
        """Static variables, as today's agent products do. They are never refreshed: the
        grant's credentials_expire_at says when they stop working, which may be before the
        sandbox itself expires."""
        sandbox, _ = await self._sandboxes.create(
            tenant=integration.tenant,
            integration_id=integration.id,
            delivery=Delivery.ENV,
            ttl=timedelta(seconds=ttl),
            session_policy=policy,
        )
        recorded = self._record_creation(sandbox, integration, request_id)
        try:
            request = self._request(integration, sandbox.session_policy, sandbox.id)
            credentials = await self._fetch(request, sandbox, request_id)
            await recorded
        except BaseException as exc:
            await self._finished(
                self._abandon(sandbox, recorded, exc, request_id)
            )  # never live, as above
            raise
        env = {
            "AWS_ACCESS_KEY_ID": credentials.access_key_id,
            "AWS_SECRET_ACCESS_KEY": credentials.secret_access_key,
            "AWS_SESSION_TOKEN": credentials.session_token,
            "AWS_REGION": integration.region,
            "AWS_DEFAULT_REGION": integration.region,
            "AWS_CREDENTIAL_EXPIRATION": iso(credentials.expiration) or "",
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        return SandboxGrant(sandbox=sandbox, env=env, credentials_expire_at=credentials.expiration)

    async def get_sandbox(self, sandbox_id: str) -> Sandbox:
        return await self._sandboxes.get(sandbox_id)

    async def delete_sandbox(self, sandbox_id: str, *, request_id: str | None = None) -> Sandbox:
        """Revokes at once: the sandbox's token stops working on the next request."""
        sandbox = await self._sandboxes.revoke(sandbox_id)
        self._auth.invalidate(sandbox.id)
        self._source.evict(scope=sandbox.id)
        await self._audit.write(self._sandbox_event("sandbox.delete", sandbox, None, request_id))
        return sandbox

    # -- vending (sandbox listener) -------------------------------------------------------

    async def vend(self, token: str, *, request_id: str | None = None) -> AwsCredentials:
        """Credentials for the sandbox that holds `token`. Unknown, expired and revoked tokens
        are indistinguishable (401), and nothing about other tenants is revealed.

        The hot path of the sandbox listener: with the sandbox, its integration and its session
        cached, it makes no query and no STS call, only the audit record."""
        sandbox = await self._auth.authenticate(token)
        if sandbox is None or not sandbox.live(self._clock()):
            self._vends_denied.inc()
            await self._audit.write(
                AuditEvent(
                    event="vend",
                    outcome="denied",
                    request_id=request_id,
                    detail="invalid, expired or revoked token",
                )
            )
            raise Unauthenticated("invalid, expired or revoked sandbox token")
        integration = await self._integration(sandbox.integration_id)
        request = self._request(integration, sandbox.session_policy, sandbox.id)
        try:
            credentials = await self._fetch(request, sandbox, request_id)
        except Exception:
            self._vends_error.inc()
            raise
        self._vends_ok.inc()
        self._metrics.vended_remaining.observe(credentials.remaining(self._clock()).total_seconds())
        return credentials

    async def _integration(self, integration_id: str) -> Integration:
        integration = self._integration_cache.get(integration_id)
        if integration is not None:
            return integration

        async def load() -> Integration:
            found = await self._integrations.get_by_id(integration_id)
            self._integration_cache[integration_id] = found
            return found

        # One query per expiry, however many vends are waiting (no stampede).
        return await self._integration_flights.do(integration_id, load)

    def _request(
        self, integration: Integration, sandbox_policy: str | None, sandbox_id: str | None = None
    ) -> CredentialRequest:
        # Sandboxes of one integration share one STS session, so one STS call serves them all;
        # a sandbox that narrows its session with its own policy gets a session of its own,
        # scoped to it, which its deletion evicts.
        own_scope = sandbox_id if sandbox_policy is not None else None
        return CredentialRequest(
            integration=integration,
            session_name=session_name(integration.tenant, own_scope or integration.name),
            # Every session carries the read-only guard, merged with any narrowing policy.
            session_policy=guarded_session_policy(sandbox_policy or integration.session_policy),
            scope=own_scope or integration.id,
        )

    async def _fetch(
        self, request: CredentialRequest, sandbox: Sandbox, request_id: str | None
    ) -> AwsCredentials:
        try:
            credentials = await self._source.fetch(request)
        except BrokerError as exc:
            sts_code = (
                exc.sts_code
                if isinstance(exc, CredentialsUnavailable | CredentialsRejected)
                else None
            )
            await self._audit.write(
                _vend_event(
                    request, sandbox, request_id, "error", sts_error=sts_code, detail=exc.message
                )
            )
            raise
        # Fail closed: the audit record is durable before the credentials leave.
        await self._audit.write(
            _vend_event(
                request,
                sandbox,
                request_id,
                "ok",
                access_key_id=credentials.access_key_id,
                expiration=credentials.expiration,
            )
        )
        return credentials

    # -- audit helpers --------------------------------------------------------------------

    @staticmethod
    def _integration_event(
        name: str, integration: Integration, request_id: str | None, detail: str | None = None
    ) -> AuditEvent:
        return AuditEvent(
            event=name,
            outcome="ok",
            tenant=integration.tenant,
            integration=integration.id,
            role_arn=integration.role_arn,
            request_id=request_id,
            detail=detail,
        )

    @staticmethod
    def _sandbox_event(
        name: str, sandbox: Sandbox, integration: Integration | None, request_id: str | None
    ) -> AuditEvent:
        return AuditEvent(
            event=name,
            outcome="ok",
            tenant=sandbox.tenant,
            integration=sandbox.integration_id,
            sandbox=sandbox.id,
            role_arn=integration.role_arn if integration else None,
            expiration=sandbox.expires_at,
            request_id=request_id,
        )


def _retrieve(task: asyncio.Task[Any]) -> None:
    """Mark a background task's outcome as seen (its awaiter, if any, reports it), so one that
    nobody awaits never logs "exception was never retrieved"."""
    if not task.cancelled():
        task.exception()


def _abandon_reason(exc: BaseException) -> str:
    if isinstance(exc, asyncio.CancelledError):
        return "the request was cancelled"
    return f"internal error ({type(exc).__name__})"


def _vend_event(
    request: CredentialRequest,
    sandbox: Sandbox,
    request_id: str | None,
    outcome: str,
    **fields: Any,
) -> AuditEvent:
    integration = request.integration
    return AuditEvent(
        event="vend",
        outcome=outcome,
        tenant=integration.tenant,
        integration=integration.id,
        sandbox=sandbox.id,
        role_arn=integration.target_role_arn or integration.role_arn,
        session_name=request.session_name,
        request_id=request_id,
        **fields,
    )
