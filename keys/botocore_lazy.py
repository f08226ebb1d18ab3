"""botocore and aiobotocore, imported off the event loop after start-up rather than before it.

Together they cost ~0.3 s of CPU to import: a quarter of `warrant serve`'s time to ready and of
every CLI command's. Nothing needs them until Warrant first talks to AWS, so modules import them
inside the functions that make or explain a call and catch with `except call_errors()` (an
except clause's expression is evaluated only once an exception has been raised, by which time
botocore is loaded). Every async path gets its session from `session_for()` (a server asks
for STS's once it serves): the import runs on a worker thread, so the loop keeps serving (an
import on the loop would stall every listener for its duration, signals included).

A client's first creation in a session also reads botocore's JSON data (endpoints, partitions,
the service's model and endpoint rules): ~50 ms for STS, far more for EC2. `session_for()` reads
it on a worker thread into the session's loader, which caches it, so creating the client then
costs the loop a few milliseconds.
"""

from __future__ import annotations

import asyncio
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aiobotocore.session import AioSession

__all__ = ["call_errors", "new_session", "session_for", "setup_problem"]

# What every client's creation reads, whatever its service (botocore's data files).
_SHARED_DATA = ("sdk-default-configuration", "partitions", "_retry")
# What a client of one service reads.
_SERVICE_DATA = ("service-2", "endpoint-rule-set-1")


def call_errors() -> tuple[type[Exception], ...]:
    """What a botocore client call raises for AWS's answer or for the way to AWS; nothing while
    botocore is not loaded (no exception can be one of its own then), so an `except` clause
    that asks, for a cancellation say, never imports it on the event loop."""
    if "botocore.exceptions" not in sys.modules:
        return ()
    from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

    return (ClientError, BotoCoreError)


def _import() -> None:
    import aiobotocore.config  # noqa: PLC0415
    import aiobotocore.session  # noqa: F401, PLC0415 - with aiohttp, which builds SSL contexts
    import botocore.config  # noqa: PLC0415
    import botocore.exceptions  # noqa: F401, PLC0415


def setup_problem(exc: Exception, service: str) -> str:
    """What to say when the SDK could not make a session or client for `service` (an
    unparseable AWS_CONFIG_FILE, an unknown AWS_PROFILE): no call was made, and fixing the
    configuration is enough (it is read again next time). Each caller raises its own error."""
    return (
        f"the AWS SDK could not be set up to call {service} ({type(exc).__name__}: {exc}); fix "
        "the server's AWS configuration (AWS_CONFIG_FILE, AWS_PROFILE and the other AWS_* "
        "variables)"
    )


def new_session() -> AioSession:
    """A fresh aiobotocore session (credentials and region from the usual AWS chain), for
    synchronous code such as the command line; async code uses `session_for()`."""
    from aiobotocore.session import AioSession  # noqa: PLC0415

    return AioSession()


async def session_for(*services: str, reuse: AioSession | None = None) -> AioSession:
    """`reuse`, or a fresh session made on a worker thread, with what clients of `services`
    read loaded into it there (quick when it is loaded already: the session's loader caches
    it). Raises the SDK's own errors for a configuration it cannot read."""
    return await asyncio.to_thread(_warmed, reuse, services)


def _warmed(session: AioSession | None, services: tuple[str, ...]) -> AioSession:
    _import()
    if session is None:
        session = new_session()
    loader = session.get_component("data_loader")
    loader.load_data_with_path("endpoints")
    for name in _SHARED_DATA:
        loader.load_data(name)
    for service in services:
        for kind in _SERVICE_DATA:
            loader.load_service_model(service, kind)
    return session
