"""Sandboxes: who may fetch an integration's credentials, until when, and with which bearer token.
The store contract, its SQL implementation (table `sandboxes`) and the authentication cache in
front of it for the vend hot path."""

from __future__ import annotations

import base64
import builtins
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol

from cachetools import TTLCache
from sqlalchemy import ForeignKey, String, Text, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import Mapped, mapped_column

from broker import validation
from broker.integrations import IntegrationRow, is_integration_id
from broker.model import Delivery, Sandbox
from issuer.db import Base, UtcDateTime, database_errors, session_factory
from issuer.errors import BadRequest, NotFound
from issuer.singleflight import SingleFlight
from issuer.tenants import TenantRow, validate_slug

__all__ = [
    "CachedSandboxAuth",
    "SandboxAuth",
    "SandboxRow",
    "SandboxStore",
    "SqlSandboxStore",
    "hash_token",
]

ID_PREFIX = "sbx_"
_ID_HEX_CHARS = 20  # 80 random bits: ids are public, they only need to be unique
_ID = re.compile(rf"{ID_PREFIX}[0-9a-f]{{{_ID_HEX_CHARS}}}")

TOKEN_PREFIX = "wsb_"  # noqa: S105 - a public prefix that marks the token kind, not a secret
_TOKEN_BYTES = 32  # 256 bits: beyond guessing, so a fast hash suffices (as for API keys)
_TOKEN_CHARS = 43  # unpadded base64url of 32 bytes
_TOKEN = re.compile(rf"{TOKEN_PREFIX}[A-Za-z0-9_-]{{{_TOKEN_CHARS}}}")


def hash_token(token: str) -> str:
    """SHA-256 hex of a sandbox token, as stored and as cached. The token is 256 random bits, so
    a slow password hash would add cost and no protection."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class SandboxAuth(Protocol):
    """Turns a sandbox's bearer token into the sandbox it belongs to."""

    async def authenticate(self, token: str) -> Sandbox | None:
        """The live sandbox this token belongs to; None when the token is malformed, unknown,
        revoked or expired (the caller cannot tell which). Never raises for a bad token."""
        ...


class SandboxStore(SandboxAuth, Protocol):
    """Where sandboxes live; container-delivery sandboxes keep only their token's hash. SQL
    implementations raise Unavailable when the database cannot be reached."""

    async def create(
        self,
        *,
        tenant: str,
        integration_id: str,
        delivery: Delivery | str,
        ttl: timedelta,
        session_policy: str | None,
    ) -> tuple[Sandbox, str | None]:
        """A new sandbox of `tenant` on one of its integrations, live for `ttl`. For container
        delivery the second item is its bearer token, returned here once and never again; env
        delivery has no token (None). NotFound when the tenant has no such integration;
        BadRequest for an unknown delivery, a ttl that is not positive or an invalid policy."""
        ...

    async def get(self, sandbox_id: str, *, tenant: str | None = None) -> Sandbox:
        """The sandbox, live or not; NotFound when there is none (or, when `tenant` is given, when
        it belongs to another tenant)."""
        ...

    async def revoke(self, sandbox_id: str, *, tenant: str | None = None) -> Sandbox:
        """Revoke the sandbox and return it; revoking again keeps the first revocation time.
        NotFound as for `get`."""
        ...

    async def revoke_for_integration(self, integration_id: str) -> builtins.list[str]:
        """Revoke every unrevoked sandbox of the integration; the ids revoked now, sorted."""
        ...

    async def list_live(
        self, integration_id: str | None = None, *, tenant: str | None = None
    ) -> builtins.list[Sandbox]:
        """Unrevoked, unexpired sandboxes, oldest first; of one integration and/or one tenant
        when given."""
        ...


class SandboxRow(Base):
    __tablename__ = "sandboxes"

    id: Mapped[str] = mapped_column(String(len(ID_PREFIX) + _ID_HEX_CHARS), primary_key=True)
    tenant: Mapped[str] = mapped_column(
        String(63), ForeignKey(TenantRow.slug, ondelete="CASCADE"), index=True
    )
    # Indexed: PostgreSQL does not index foreign keys itself, and both the cascade from an
    # integration and revoke_for_integration look sandboxes up by it.
    integration_id: Mapped[str] = mapped_column(
        String(20), ForeignKey(IntegrationRow.id, ondelete="CASCADE"), index=True
    )
    delivery: Mapped[str] = mapped_column(String(16))
    session_policy: Mapped[str | None] = mapped_column(Text(), nullable=True)
    # NULL for env delivery; unique allows any number of NULLs on both databases.
    token_hash: Mapped[str | None] = mapped_column(String(64), unique=True, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)

    def __repr__(self) -> str:
        return f"SandboxRow(id={self.id!r}, tenant={self.tenant!r})"

    def to_sandbox(self) -> Sandbox:
        return Sandbox(
            id=self.id,
            tenant=self.tenant,
            integration_id=self.integration_id,
            delivery=Delivery(self.delivery),
            created_at=self.created_at,
            expires_at=self.expires_at,
            session_policy=self.session_policy,
            revoked_at=self.revoked_at,
        )


class SqlSandboxStore:
    """SandboxStore on the shared SQL database (table `sandboxes`)."""

    def __init__(self, engine: AsyncEngine, clock: Callable[[], datetime]) -> None:
        self._sessions = session_factory(engine)
        self._clock = clock

    def __repr__(self) -> str:
        return "SqlSandboxStore()"

    async def create(
        self,
        *,
        tenant: str,
        integration_id: str,
        delivery: Delivery | str,
        ttl: timedelta,
        session_policy: str | None,
    ) -> tuple[Sandbox, str | None]:
        tenant = validate_slug(tenant)
        try:
            delivery = Delivery(delivery)
        except ValueError:
            raise BadRequest(
                f"invalid delivery {validation.shown(delivery)}: delivery is "
                f"{' or '.join(repr(d.value) for d in Delivery)}"
            ) from None
        if ttl <= timedelta(0):
            raise BadRequest(f"a sandbox's ttl must be positive, not {ttl}")
        session_policy = validation.session_policy(session_policy)
        token: str | None = None
        if delivery is Delivery.CONTAINER:
            secret = base64.urlsafe_b64encode(secrets.token_bytes(_TOKEN_BYTES)).rstrip(b"=")
            token = TOKEN_PREFIX + secret.decode("ascii")
        now = self._clock().astimezone(UTC)
        sandbox = Sandbox(
            id=ID_PREFIX + secrets.token_hex(_ID_HEX_CHARS // 2),
            tenant=tenant,
            integration_id=integration_id,
            delivery=delivery,
            created_at=now,
            expires_at=now + ttl,
            session_policy=session_policy,
        )
        missing = NotFound(
            f"tenant {tenant!r} has no integration {validation.shown(integration_id)}"
        )
        if not is_integration_id(integration_id):
            raise missing
        try:
            with database_errors():
                async with self._sessions.begin() as session:
                    # Same tenant, checked in the transaction that inserts: a tenant can never
                    # attach a sandbox to another tenant's integration.
                    owner = await session.scalar(
                        select(IntegrationRow.tenant).where(IntegrationRow.id == integration_id)
                    )
                    if owner != tenant:
                        raise missing
                    session.add(
                        SandboxRow(
                            id=sandbox.id,
                            tenant=tenant,
                            integration_id=integration_id,
                            delivery=delivery.value,
                            session_policy=session_policy,
                            token_hash=None if token is None else hash_token(token),
                            created_at=sandbox.created_at,
                            expires_at=sandbox.expires_at,
                        )
                    )
        except IntegrityError as exc:
            # The integration (or its tenant) was removed between the check and the insert.
            raise missing from exc
        return sandbox, token

    async def authenticate(self, token: str) -> Sandbox | None:
        if not _well_formed(token):
            return None
        digest = hash_token(token)
        with database_errors():
            async with self._sessions() as session:
                row = await session.scalar(
                    select(SandboxRow).where(SandboxRow.token_hash == digest)
                )
        # Matched by the index already; comparing again in constant time keeps the decision free
        # of timing differences whatever the database's comparison does.
        if row is None or row.token_hash is None or not hmac.compare_digest(row.token_hash, digest):
            return None
        sandbox = row.to_sandbox()
        return sandbox if sandbox.live(self._clock()) else None

    async def get(self, sandbox_id: str, *, tenant: str | None = None) -> Sandbox:
        row = None
        if isinstance(sandbox_id, str) and _ID.fullmatch(sandbox_id):
            with database_errors():
                async with self._sessions() as session:
                    row = await session.get(SandboxRow, sandbox_id)
        if row is None or (tenant is not None and row.tenant != tenant):
            raise _not_found(sandbox_id)
        return row.to_sandbox()

    async def revoke(self, sandbox_id: str, *, tenant: str | None = None) -> Sandbox:
        if not (isinstance(sandbox_id, str) and _ID.fullmatch(sandbox_id)):
            raise _not_found(sandbox_id)
        conditions = [SandboxRow.id == sandbox_id]
        if tenant is not None:
            conditions.append(SandboxRow.tenant == tenant)
        with database_errors():
            async with self._sessions.begin() as session:
                await session.execute(
                    update(SandboxRow)
                    .where(*conditions, SandboxRow.revoked_at.is_(None))
                    .values(revoked_at=self._clock().astimezone(UTC))
                )
                row = await session.scalar(select(SandboxRow).where(*conditions))
        if row is None:
            raise _not_found(sandbox_id)
        return row.to_sandbox()

    async def revoke_for_integration(self, integration_id: str) -> builtins.list[str]:
        unrevoked = (SandboxRow.integration_id == integration_id, SandboxRow.revoked_at.is_(None))
        with database_errors():
            async with self._sessions.begin() as session:
                ids = sorted((await session.scalars(select(SandboxRow.id).where(*unrevoked))).all())
                if ids:
                    await session.execute(
                        update(SandboxRow)
                        .where(SandboxRow.id.in_(ids), SandboxRow.revoked_at.is_(None))
                        .values(revoked_at=self._clock().astimezone(UTC))
                    )
        return ids

    async def list_live(
        self, integration_id: str | None = None, *, tenant: str | None = None
    ) -> builtins.list[Sandbox]:
        query = select(SandboxRow).where(
            SandboxRow.revoked_at.is_(None), SandboxRow.expires_at > self._clock()
        )
        if integration_id is not None:
            query = query.where(SandboxRow.integration_id == integration_id)
        if tenant is not None:
            query = query.where(SandboxRow.tenant == tenant)
        with database_errors():
            async with self._sessions() as session:
                rows = (await session.scalars(query)).all()
        return sorted((row.to_sandbox() for row in rows), key=lambda s: (s.created_at, s.id))


class CachedSandboxAuth:
    """A SandboxAuth in front of another that remembers successful authentications for `ttl`,
    keyed by the token's SHA-256 (the plaintext is never kept), so the vend hot path does not
    query the database per request.

    Expiry stays exact: every hit re-checks `Sandbox.live` against the clock. `invalidate` drops a
    sandbox at once, so a revocation made in this process takes effect immediately; one made by
    another process (or replica) is seen here within `ttl`, the revocation delay; keep it short.
    Failed authentications are never cached, so a new sandbox works at once. Liveness is judged
    by `clock`; entries age on `timer` (the monotonic clock by default: a step of the wall clock
    can neither keep one alive nor expire it early).
    """

    def __init__(
        self,
        inner: SandboxAuth,
        ttl: timedelta,
        clock: Callable[[], datetime],
        maxsize: int = 100_000,
        *,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self._inner = inner
        self._ttl = ttl
        self._clock = clock
        self._maxsize = maxsize
        self._cache: TTLCache[str, Sandbox] = TTLCache(
            maxsize=maxsize, ttl=ttl.total_seconds(), timer=timer
        )
        # sandbox id -> token hash, to find a sandbox's entry on invalidate. A superset of the
        # cache's live entries (the cache evicts silently); pruned as it grows, see _remember.
        self._digests: dict[str, str] = {}
        # Bumped on every invalidation; an authentication in flight during one must not cache
        # its result, or a sandbox revoked meanwhile would come back.
        self._generation = 0
        self._flights: SingleFlight[str, Sandbox | None] = SingleFlight()

    def __repr__(self) -> str:
        return f"CachedSandboxAuth(inner={self._inner!r}, ttl={self._ttl!r})"

    async def authenticate(self, token: str) -> Sandbox | None:
        if not _well_formed(token):
            return None
        digest = hash_token(token)
        cached = self._cache.get(digest)
        if cached is not None:
            if cached.live(self._clock()):
                return cached
            self._cache.pop(digest, None)
            return None
        # Taken now, not when the shared call starts: an invalidation from here on
        # must keep its result out of the cache.
        generation = self._generation

        async def load() -> Sandbox | None:
            sandbox = await self._inner.authenticate(token)
            if sandbox is not None and generation == self._generation:
                self._remember(digest, sandbox)
            return sandbox

        return await self._flights.do(digest, load)

    def invalidate(self, sandbox_id: str) -> None:
        """Forget the sandbox now: its next authentication asks the inner store."""
        self._generation += 1
        digest = self._digests.pop(sandbox_id, None)
        if digest is not None:
            self._cache.pop(digest, None)

    def __len__(self) -> int:
        return len(self._cache)

    def _remember(self, digest: str, sandbox: Sandbox) -> None:
        self._cache[digest] = sandbox
        self._digests[sandbox.id] = digest
        if len(self._digests) > 2 * self._maxsize:
            # Amortised O(1): after pruning at most maxsize entries remain.
            self._digests = {sid: d for sid, d in self._digests.items() if d in self._cache}


def _well_formed(token: object) -> bool:
    return isinstance(token, str) and _TOKEN.fullmatch(token) is not None


def _not_found(sandbox_id: object) -> NotFound:
    if isinstance(sandbox_id, str) and _ID.fullmatch(sandbox_id):
        return NotFound(f"no sandbox {sandbox_id!r}")
    # Not echoed: a sandbox's token may be pasted here by mistake.
    return NotFound("no sandbox with that id; sandbox ids are sbx_ and 20 hex digits")
