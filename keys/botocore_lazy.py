"""botocore and aiobotocore, imported at the first AWS call rather than at start-up.

Together they cost ~0.5 s to import: a third of `warrant serve`'s time to ready and of every CLI
command's. Nothing needs them until Warrant first talks to AWS, so modules import them inside
the functions that make or explain a call, create sessions with `new_session()`, and catch with
`except call_errors()` (an except clause's expression is evaluated only once an exception has
been raised, by which time botocore is loaded).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aiobotocore.session import AioSession

__all__ = ["call_errors", "new_session"]


def call_errors() -> tuple[type[Exception], ...]:
    """What a botocore client call raises for AWS's answer or for the way to AWS."""
    from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

    return (ClientError, BotoCoreError)


def new_session() -> AioSession:
    """A fresh aiobotocore session (credentials and region from the usual AWS chain)."""
    from aiobotocore.session import AioSession  # noqa: PLC0415

    return AioSession()
