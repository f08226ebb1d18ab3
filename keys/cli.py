"""`warrant keys ...`: list, rotate, revoke and prune signing keys.

The group builds nothing itself: the parent command puts an object with a
`key_manager_factory` on the click context (see KeysCliContext).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, NoReturn, Protocol, TypeVar, runtime_checkable

import click

from keys.errors import KeysError
from keys.manager import KeyManager
from keys.model import KeyRecord, RotationPolicy
from keys.rotation import format_time, retire_after

__all__ = ["KeysCliContext", "keys", "keys_group"]

_T = TypeVar("_T")

_COLUMNS = ("KID", "ALG", "STATE", "CREATED", "ACTIVATED", "RETIRE-AFTER")


@runtime_checkable
class KeysCliContext(Protocol):
    """What `ctx.obj` must offer the keys commands."""

    @property
    def key_manager_factory(self) -> Callable[[], KeyManager]: ...


@click.group(name="keys")
def keys() -> None:
    """Manage the issuer's signing keys."""


keys_group = keys


@keys.command(name="list")
@click.pass_context
def list_keys(ctx: click.Context) -> None:
    """Show every key: kid, algorithm, state and its lifecycle times (UTC)."""
    manager = _manager(ctx)
    records = _run(manager.list())
    if not records:
        click.echo("no keys yet: the issuer creates its first keys when it starts")
        return
    click.echo(_table(records, manager.policy))


@keys.command(name="rotate")
@click.option(
    "--force",
    is_flag=True,
    help="Activate a key even if it has not been published long enough (emergencies only).",
)
@click.pass_context
def rotate(ctx: click.Context, force: bool) -> None:
    """Make the oldest safe pending key active and retire the active key."""
    manager = _manager(ctx)
    if force:
        click.echo(
            "WARNING: --force skips the publish-ahead safety check; tokens signed by a key that "
            "verifiers have not fetched yet will be rejected",
            err=True,
        )
    outcome = _run(manager.rotate(force=force))
    if outcome.warning is not None:
        click.echo(f"WARNING: {outcome.warning}", err=True)
    new_active = outcome.promoted_kid or "a new key"
    click.echo(f"rotated: {new_active} is now active; {outcome.retired_kid} is retired")


# A kid is base64url, so one in 32 starts with "-": revoke has no options of its own
# (only --help), so anything else that looks like one is the kid.
@keys.command(name="revoke", context_settings={"ignore_unknown_options": True})
@click.argument("kid")
@click.pass_context
def revoke(ctx: click.Context, kid: str) -> None:
    """Drop KID from the JWKS now; tokens it signed stop verifying."""
    outcome = _run(_manager(ctx).revoke(kid))
    click.echo(outcome.message)


@keys.command(name="prune")
@click.pass_context
def prune(ctx: click.Context) -> None:
    """Remove retired keys whose tokens have all expired, and revoked keys."""
    removed = _run(_manager(ctx).prune())
    if not removed:
        click.echo("nothing to prune")
        return
    for kid in removed:
        click.echo(f"removed {kid}")


def _manager(ctx: click.Context) -> KeyManager:
    obj = ctx.obj
    if not isinstance(obj, KeysCliContext):
        raise click.ClickException("the keys commands were started without a key manager")
    try:
        return obj.key_manager_factory()
    except KeysError as exc:
        _fail(exc)


def _run(coroutine: Coroutine[Any, Any, _T]) -> _T:
    try:
        return asyncio.run(coroutine)
    except KeysError as exc:
        _fail(exc)


def _fail(exc: KeysError) -> NoReturn:
    click.echo(f"error: {exc}", err=True)
    raise SystemExit(1)


def _table(records: Sequence[KeyRecord], policy: RotationPolicy) -> str:
    rows = [_COLUMNS]
    for record in records:
        expires = retire_after(record, policy)
        rows.append(
            (
                record.kid,
                record.alg.value,
                record.state.value,
                format_time(record.created_at),
                "-" if record.activated_at is None else format_time(record.activated_at),
                "-" if expires is None else format_time(expires),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )
