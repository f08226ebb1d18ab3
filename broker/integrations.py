"""Integrations: a tenant's access to one AWS account and region. The store contract and its SQL
implementation (table `integrations`, in the issuer's database)."""

from __future__ import annotations

import builtins
import re
import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol, cast

from sqlalchemy import (
    CursorResult,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    delete,
    select,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from broker import validation
from broker.model import Integration, Method
from issuer.db import Base, UtcDateTime, database_errors, session_factory
from issuer.errors import BadRequest, Conflict, NotFound, UnknownTenant
from issuer.tenants import TenantRow, validate_slug

__all__ = [
    "IntegrationRow",
    "IntegrationStore",
    "SqlIntegrationStore",
    "is_integration_id",
]

ID_PREFIX = "int_"
_ID_HEX_CHARS = 16  # 64 random bits: unique among any realistic number of integrations
_ID = re.compile(rf"{ID_PREFIX}[0-9a-f]{{{_ID_HEX_CHARS}}}")
METHOD_RULE = "method is 'oidc' or 'instance_role'"


def is_integration_id(value: object) -> bool:
    """Whether `value` has the shape of an integration id (int_ and 16 hex digits)."""
    return isinstance(value, str) and _ID.fullmatch(value) is not None


class IntegrationStore(Protocol):
    """Where integrations live. Tenant arguments are checked against the slug rule first
    (InvalidSlug). `ref` is an integration's id or its name: operators type names. An integration
    of another tenant is reported NotFound, exactly like one that does not exist. SQL
    implementations raise Unavailable when the database cannot be reached."""

    async def add(
        self,
        tenant: str,
        *,
        name: str,
        account_id: str,
        role_arn: str,
        region: str | None = None,
        method: Method | str = Method.OIDC,
        target_role_arn: str | None = None,
        session_duration: int | None = None,
        session_policy: str | None = None,
        profile: str | None = None,
    ) -> Integration:
        """Create an integration. Raises BadRequest naming the field and its rule for invalid
        input, UnknownTenant when the tenant does not exist, Conflict when the tenant already has
        an integration with this name. An instance_role integration gets a fresh ExternalId."""
        ...

    async def get(self, tenant: str, ref: str) -> Integration:
        """The tenant's integration with this id or name; NotFound when there is none."""
        ...

    async def get_by_id(self, integration_id: str) -> Integration:
        """The integration with this id, whatever its tenant; NotFound when there is none."""
        ...

    async def list(self, tenant: str) -> builtins.list[Integration]:
        """The tenant's integrations sorted by name (code-point order); UnknownTenant when the
        tenant does not exist."""
        ...

    async def remove(self, tenant: str, ref: str) -> Integration:
        """Delete the tenant's integration with this id or name, and with it (by cascade) its
        sandboxes; return what was deleted. NotFound when there is none."""
        ...


class IntegrationRow(Base):
    __tablename__ = "integrations"
    __table_args__ = (UniqueConstraint("tenant", "name", name="uq_integrations_tenant_name"),)

    id: Mapped[str] = mapped_column(String(len(ID_PREFIX) + _ID_HEX_CHARS), primary_key=True)
    tenant: Mapped[str] = mapped_column(
        String(63), ForeignKey(TenantRow.slug, ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(validation.NAME_MAX_CHARS))
    account_id: Mapped[str] = mapped_column(String(12))
    role_arn: Mapped[str] = mapped_column(String(validation.ROLE_ARN_MAX_CHARS))
    region: Mapped[str] = mapped_column(String(32))
    method: Mapped[str] = mapped_column(String(16))
    target_role_arn: Mapped[str | None] = mapped_column(
        String(validation.ROLE_ARN_MAX_CHARS), nullable=True
    )
    external_id: Mapped[str | None] = mapped_column(String(1224), unique=True, nullable=True)
    session_duration: Mapped[int] = mapped_column(Integer())
    session_policy: Mapped[str | None] = mapped_column(Text(), nullable=True)
    # Added after the first release: the server default lets create_schema add it in place.
    profile: Mapped[str] = mapped_column(String(16), server_default="incident")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())

    def to_integration(self) -> Integration:
        return Integration(
            id=self.id,
            tenant=self.tenant,
            name=self.name,
            account_id=self.account_id,
            role_arn=self.role_arn,
            region=self.region,
            method=Method(self.method),
            session_duration=self.session_duration,
            created_at=self.created_at,
            target_role_arn=self.target_role_arn,
            external_id=self.external_id,
            session_policy=self.session_policy,
            profile=self.profile,
        )


class SqlIntegrationStore:
    """IntegrationStore on the shared SQL database (table `integrations`).

    `floor_seconds` is the least lifetime vended credentials keep; a session duration must exceed
    it by 10 minutes (see validation.session_duration).
    """

    def __init__(
        self, engine: AsyncEngine, clock: Callable[[], datetime], *, floor_seconds: int
    ) -> None:
        self._sessions = session_factory(engine)
        self._clock = clock
        self._floor_seconds = floor_seconds

    def __repr__(self) -> str:
        return f"SqlIntegrationStore(floor_seconds={self._floor_seconds})"

    async def add(
        self,
        tenant: str,
        *,
        name: str,
        account_id: str,
        role_arn: str,
        region: str | None = None,
        method: Method | str = Method.OIDC,
        target_role_arn: str | None = None,
        session_duration: int | None = None,
        session_policy: str | None = None,
        profile: str | None = None,
    ) -> Integration:
        integration = self._validated(
            tenant,
            name=name,
            account_id=account_id,
            role_arn=role_arn,
            region=region,
            method=method,
            target_role_arn=target_role_arn,
            session_duration=session_duration,
            session_policy=session_policy,
            profile=profile,
        )
        try:
            with database_errors():
                async with self._sessions.begin() as session:
                    session.add(_row(integration))
        except IntegrityError as exc:
            # The database decides (foreign key, unique name), so concurrent adds cannot both win;
            # which constraint failed is read back rather than parsed from driver messages.
            if not await self._tenant_exists(integration.tenant):
                raise UnknownTenant(integration.tenant) from exc
            raise Conflict(
                f"tenant {integration.tenant!r} already has an integration named "
                f"{integration.name!r}; choose another name or remove that one first"
            ) from exc
        return integration

    async def get(self, tenant: str, ref: str) -> Integration:
        tenant = validate_slug(tenant)
        with database_errors():
            async with self._sessions() as session:
                row = await _find(session, tenant, ref)
        if row is None:
            raise _not_found(tenant, ref)
        return row.to_integration()

    async def get_by_id(self, integration_id: str) -> Integration:
        if not is_integration_id(integration_id):
            raise NotFound(_no_such_id(integration_id))
        with database_errors():
            async with self._sessions() as session:
                row = await session.get(IntegrationRow, integration_id)
        if row is None:
            raise NotFound(_no_such_id(integration_id))
        return row.to_integration()

    async def list(self, tenant: str) -> builtins.list[Integration]:
        tenant = validate_slug(tenant)
        with database_errors():
            async with self._sessions() as session:
                rows = (
                    await session.scalars(
                        select(IntegrationRow).where(IntegrationRow.tenant == tenant)
                    )
                ).all()
                if not rows and await session.get(TenantRow, tenant) is None:
                    raise UnknownTenant(tenant)
        # Sorted here: PostgreSQL's collation and SQLite's would disagree on ORDER BY name.
        return sorted((row.to_integration() for row in rows), key=lambda i: (i.name, i.id))

    async def remove(self, tenant: str, ref: str) -> Integration:
        tenant = validate_slug(tenant)
        with database_errors():
            async with self._sessions.begin() as session:
                row = await _find(session, tenant, ref)
                if row is None:
                    raise _not_found(tenant, ref)
                result = cast(
                    "CursorResult[Any]",
                    await session.execute(
                        delete(IntegrationRow).where(IntegrationRow.id == row.id)
                    ),
                )
                if result.rowcount == 0:  # removed concurrently between the read and the delete
                    raise _not_found(tenant, ref)
        return row.to_integration()

    def _validated(
        self,
        tenant: str,
        *,
        name: str,
        account_id: str,
        role_arn: str,
        region: str | None,
        method: Method | str,
        target_role_arn: str | None,
        session_duration: int | None,
        session_policy: str | None,
        profile: str | None,
    ) -> Integration:
        tenant = validate_slug(tenant)
        try:
            method = Method(method)
        except ValueError:
            raise BadRequest(f"invalid method {method!r}: {METHOD_RULE}") from None
        name = validation.friendly_name(name)
        if is_integration_id(name):
            raise BadRequest(
                f"invalid name {name!r}: it looks like an integration id (int_ and 16 hex "
                f"digits), and integrations are looked up by id or name; choose another name"
            )
        account_id = validation.account_id(account_id)
        role_arn = validation.role_arn(role_arn, account_id=account_id)
        partition = validation.partition_of(role_arn)
        region = validation.region(
            validation.default_region(partition) if region is None else region
        )
        validation.region_matches_partition(region, partition)
        if target_role_arn is not None:
            if method is not Method.INSTANCE_ROLE:
                raise BadRequest(
                    "target_role_arn is only for method 'instance_role' (assume a second role "
                    "after the first); with method 'oidc' put the role to assume in role_arn"
                )
            # Cross-account is the point of a target role, so any account will do; but STS never
            # assumes a role in another partition.
            target_role_arn = validation.role_arn(
                target_role_arn, account_id=None, field="target_role_arn"
            )
            target_partition = validation.partition_of(target_role_arn)
            if target_partition != partition:
                raise BadRequest(
                    f"target_role_arn is in partition {target_partition} but role_arn is in "
                    f"partition {partition}; a role can only assume roles in its own partition"
                )
        duration = validation.session_duration(
            session_duration,
            chained=target_role_arn is not None,
            floor_seconds=self._floor_seconds,
        )
        return Integration(
            id=ID_PREFIX + secrets.token_hex(_ID_HEX_CHARS // 2),
            tenant=tenant,
            name=name,
            account_id=account_id,
            role_arn=role_arn,
            region=region,
            method=method,
            session_duration=duration,
            created_at=self._clock().astimezone(UTC),
            target_role_arn=target_role_arn,
            external_id=(
                validation.generate_external_id() if method is Method.INSTANCE_ROLE else None
            ),
            session_policy=validation.session_policy(session_policy),
            profile=validation.profile(profile),
        )

    async def _tenant_exists(self, tenant: str) -> bool:
        with database_errors():
            async with self._sessions() as session:
                return await session.get(TenantRow, tenant) is not None


def _row(integration: Integration) -> IntegrationRow:
    return IntegrationRow(
        id=integration.id,
        tenant=integration.tenant,
        name=integration.name,
        account_id=integration.account_id,
        role_arn=integration.role_arn,
        region=integration.region,
        method=integration.method.value,
        target_role_arn=integration.target_role_arn,
        external_id=integration.external_id,
        session_duration=integration.session_duration,
        session_policy=integration.session_policy,
        profile=integration.profile,
        created_at=integration.created_at,
    )


async def _find(session: AsyncSession, tenant: str, ref: object) -> IntegrationRow | None:
    # Names can never look like ids (add refuses them), so the shape alone says which column.
    if is_integration_id(ref):
        column = IntegrationRow.id
    elif isinstance(ref, str) and 1 <= len(ref) <= validation.NAME_MAX_CHARS and ref.isprintable():
        column = IntegrationRow.name
    else:
        return None  # could not name any integration; and PostgreSQL refuses NUL characters
    return await session.scalar(
        select(IntegrationRow).where(IntegrationRow.tenant == tenant, column == ref)
    )


def _not_found(tenant: str, ref: object) -> NotFound:
    return NotFound(
        f"tenant {tenant!r} has no integration {validation.shown(ref)}; list the tenant's "
        f"integrations for their names and ids"
    )


def _no_such_id(integration_id: object) -> str:
    return f"no integration with id {validation.shown(integration_id)}"
