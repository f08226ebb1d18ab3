"""Tenants: who the issuer mints tokens for. The slug rule, the store contract, its SQL
implementation and a read cache for the minting path."""

from __future__ import annotations

import builtins
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, cast

from cachetools import TTLCache
from sqlalchemy import CursorResult, String, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import Mapped, mapped_column

from issuer.db import Base, UtcDateTime, database_errors, session_factory
from issuer.errors import BadRequest, InvalidSlug, TenantExists, UnknownTenant
from issuer.singleflight import SingleFlight

__all__ = [
    "AUDIENCE_SUFFIX",
    "SLUG_RULE",
    "CachedTenantStore",
    "SqlTenantStore",
    "Tenant",
    "TenantStore",
    "audience_for",
    "validate_slug",
]

SLUG_RULE = (
    "a tenant slug is 2 to 63 characters: lowercase letters a-z, digits 0-9 and hyphens, "
    "starting and ending with a letter or digit"
)
_SLUG = re.compile(r"[a-z0-9][a-z0-9-]{0,61}[a-z0-9]")
_SHOWN_CHARS = 80

NAME_MAX_CHARS = 200
NAME_RULE = f"a tenant name is 1 to {NAME_MAX_CHARS} printable characters, not only spaces"

AUDIENCE_SUFFIX = "-oidc-service"
# AWS IAM caps an OIDC provider's client ID at 255 characters; the longest slug (63) plus this
# suffix is 76, well inside it.


def validate_slug(value: object) -> str:
    """Return `value` if it is a valid slug; otherwise raise InvalidSlug quoting it and the rule."""
    if isinstance(value, str) and _SLUG.fullmatch(value):
        return value
    raise InvalidSlug(f"invalid tenant slug {_shown(value)}: {SLUG_RULE}")


def audience_for(slug: str) -> str:
    """The `aud` of tokens minted for a tenant, and the client ID of its IAM OIDC provider."""
    return f"{validate_slug(slug)}{AUDIENCE_SUFFIX}"


@dataclass(frozen=True, slots=True)
class Tenant:
    slug: str
    name: str
    created_at: datetime


class TenantStore(Protocol):
    """Where tenants live. Every method first checks the slug and raises InvalidSlug when it breaks
    SLUG_RULE; SQL implementations raise Unavailable when the database cannot be reached."""

    async def add(self, slug: str, name: str | None = None) -> Tenant:
        """Create a tenant; `name` defaults to the slug. Raises BadRequest for a name that is
        empty, longer than 200 characters or not printable, TenantExists if the slug is taken."""
        ...

    async def get(self, slug: str) -> Tenant:
        """The tenant with this slug; raises UnknownTenant when there is none."""
        ...

    async def list(self) -> builtins.list[Tenant]:
        """Every tenant, sorted by slug (code-point order); empty when there are none."""
        ...

    async def remove(self, slug: str) -> None:
        """Delete the tenant; raises UnknownTenant when there is none."""
        ...


class TenantRow(Base):
    __tablename__ = "tenants"

    slug: Mapped[str] = mapped_column(String(63), primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_MAX_CHARS))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())

    def to_tenant(self) -> Tenant:
        return Tenant(slug=self.slug, name=self.name, created_at=self.created_at)


class SqlTenantStore:
    """TenantStore on the shared SQL database (table `tenants`)."""

    def __init__(self, engine: AsyncEngine, clock: Callable[[], datetime]) -> None:
        self._sessions = session_factory(engine)
        self._clock = clock

    def __repr__(self) -> str:
        return "SqlTenantStore()"

    async def add(self, slug: str, name: str | None = None) -> Tenant:
        slug = validate_slug(slug)
        name = _validate_name(slug if name is None else name)
        tenant = Tenant(slug=slug, name=name, created_at=self._clock().astimezone(UTC))
        try:
            with database_errors():
                async with self._sessions.begin() as session:
                    session.add(
                        TenantRow(slug=slug, name=tenant.name, created_at=tenant.created_at)
                    )
        except IntegrityError as exc:
            # The primary key decides, so two processes adding the same slug at once cannot both
            # succeed; no check-then-insert race.
            raise TenantExists(slug) from exc
        return tenant

    async def get(self, slug: str) -> Tenant:
        slug = validate_slug(slug)
        with database_errors():
            async with self._sessions() as session:
                row = await session.get(TenantRow, slug)
        if row is None:
            raise UnknownTenant(slug)
        return row.to_tenant()

    async def list(self) -> builtins.list[Tenant]:
        with database_errors():
            async with self._sessions() as session:
                rows = (await session.scalars(select(TenantRow))).all()
        # Sorted here, not by ORDER BY: PostgreSQL's locale collation would order "a-c" after "ab"
        # while SQLite would not; code-point order is the same everywhere.
        return sorted((row.to_tenant() for row in rows), key=lambda tenant: tenant.slug)

    async def remove(self, slug: str) -> None:
        slug = validate_slug(slug)
        with database_errors():
            async with self._sessions.begin() as session:
                result = cast(
                    "CursorResult[Any]",
                    await session.execute(delete(TenantRow).where(TenantRow.slug == slug)),
                )
        if result.rowcount == 0:
            raise UnknownTenant(slug)


class CachedTenantStore:
    """A TenantStore in front of another that answers repeated `get`s from memory, so the hot
    minting path does not query the database per request.

    Only found tenants are cached, each for `ttl`; an unknown slug always reaches the inner store,
    so a tenant just added elsewhere is visible at once. `add` and `remove` through this store drop
    its own entry, but a tenant removed by another process (or another replica) stays mintable here
    for at most `ttl` (the issuer uses 5 s). Entries age on `timer` (the monotonic clock by
    default: a step of the wall clock can neither keep one alive nor expire it early).
    """

    def __init__(
        self,
        inner: TenantStore,
        ttl: timedelta,
        *,
        timer: Callable[[], float] = time.monotonic,
        maxsize: int = 10_000,
    ) -> None:
        self._inner = inner
        self._ttl = ttl
        self._cache: TTLCache[str, Tenant] = TTLCache(
            maxsize=maxsize, ttl=ttl.total_seconds(), timer=timer
        )
        # Bumped on every invalidation; a `get` that started before one must not cache what it
        # read, or a tenant removed while the read was in flight would come back.
        self._generation = 0
        self._flights: SingleFlight[str, Tenant] = SingleFlight()

    def __repr__(self) -> str:
        return f"CachedTenantStore(inner={self._inner!r}, ttl={self._ttl!r})"

    async def add(self, slug: str, name: str | None = None) -> Tenant:
        slug = validate_slug(slug)
        try:
            return await self._inner.add(slug, name)
        finally:
            self._invalidate(slug)

    async def get(self, slug: str) -> Tenant:
        slug = validate_slug(slug)
        cached = self._cache.get(slug)
        if cached is not None:
            return cached
        # Taken now, not when the shared call starts: an invalidation from here on
        # must keep its result out of the cache.
        generation = self._generation

        async def load() -> Tenant:
            tenant = await self._inner.get(slug)
            if generation == self._generation:
                self._cache[slug] = tenant
            return tenant

        return await self._flights.do(slug, load)

    async def list(self) -> builtins.list[Tenant]:
        return await self._inner.list()

    async def remove(self, slug: str) -> None:
        slug = validate_slug(slug)
        try:
            await self._inner.remove(slug)
        finally:
            self._invalidate(slug)

    def _invalidate(self, slug: str) -> None:
        self._generation += 1
        self._cache.pop(slug, None)


def _validate_name(name: object) -> str:
    if (
        isinstance(name, str)
        and 1 <= len(name) <= NAME_MAX_CHARS
        and name.isprintable()
        and name.strip()
    ):
        return name
    raise BadRequest(f"invalid tenant name {_shown(name)}: {NAME_RULE}")


def _shown(value: object) -> str:
    shown = repr(value)
    if len(shown) > _SHOWN_CHARS:
        return shown[: _SHOWN_CHARS - 3] + "..."
    return shown
