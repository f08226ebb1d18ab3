"""The gRPC baseline server: `warrant.v1.CredentialBroker` whose GetCredentials answers one fixed
Credentials message, served as Warrant's gRPC listener is (`grpc.aio`, the same server OPTIONS
from `broker.delivery.grpc_server`, on uvloop, one process), with the standard health service
so the harness can tell when it serves.

It reads nothing: no metadata, no token, no cache, no audit. What Warrant adds on top of this
is what the `grpc` figure measures. Run as `python -m bench.bare_grpc --port N`.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Sequence

import grpc
import uvloop
from google.protobuf import timestamp_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from broker.delivery.grpc_server import OPTIONS, SERVICE_NAME
from broker.rpc.v1 import credential_broker_pb2 as pb

# Shaped like what the broker vends at the STS stand-in: the same fields, similar lengths.
CREDENTIALS = pb.Credentials(
    access_key_id="ASIABARE000000000000",
    secret_access_key="b" * 40,
    session_token="t" * 356,
    expiration=timestamp_pb2.Timestamp(seconds=4_102_444_800),
    account_id="123456789012",
)


async def get_credentials(
    request: pb.GetCredentialsRequest, context: grpc.aio.ServicerContext[object, object]
) -> pb.Credentials:
    # The request and its metadata are never read: the baseline is grpcio's cost.
    return CREDENTIALS


def broker_handler() -> grpc.GenericRpcHandler:
    """CredentialBroker with GetCredentials only, registered as the generated code registers
    a servicer (the other methods would answer UNIMPLEMENTED there too)."""
    method = grpc.unary_unary_rpc_method_handler(
        get_credentials,
        request_deserializer=pb.GetCredentialsRequest.FromString,
        response_serializer=pb.Credentials.SerializeToString,
    )
    return grpc.method_handlers_generic_handler(SERVICE_NAME, {"GetCredentials": method})


async def serve(host: str, port: int) -> None:
    server = grpc.aio.server(options=OPTIONS)
    # Registered in Warrant's order: the broker's service first, then health.
    server.add_generic_rpc_handlers((broker_handler(),))
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    server.add_insecure_port(f"{host}:{port}")
    await server.start()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1.0)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bare_grpc", description=__doc__)
    parser.add_argument("--port", type=int, required=True, help="port on 127.0.0.1")
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
