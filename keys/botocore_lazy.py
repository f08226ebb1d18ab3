"""botocore and aiobotocore, imported off the event loop after start-up rather than before it.

Together they cost ~0.3 s of CPU to import: a quarter of `warrant serve`'s time to ready and of
every CLI command's. Nothing needs them until Warrant first talks to AWS, so modules import them
inside the functions that make or explain a call and catch with `except call_errors()` (an
except clause's expression is evaluated only once an exception has been raised, by which time
botocore is loaded). A server calls `load()` once it serves, and every async path that creates
a session awaits it first: the import runs on a worker thread, so the loop keeps serving (an
import on the loop would stall every listener for its duration, signals included).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aiobotocore.session import AioSession

__all__ = ["call_errors", "load", "new_session"]


def call_errors() -> tuple[type[Exception], ...]:
    """What a botocore client call raises for AWS's answer or for the way to AWS."""
    from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

    return (ClientError, BotoCoreError)


def _import() -> None:
    import botocore.config  # noqa: PLC0415
    import botocore.exceptions  # noqa: F401, PLC0415


async def load() -> None:
    """Import the SDK on a worker thread (at once if it is already imported)."""
    await asyncio.to_thread(_import)


def new_session() -> AioSession:
    """A fresh aiobotocore session (credentials and region from the usual AWS chain). From async
    code, `await load()` first."""
    from aiobotocore.session import AioSession  # noqa: PLC0415

    return AioSession()
