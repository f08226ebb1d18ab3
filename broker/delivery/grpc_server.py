"""The gRPC listener: `warrant.v1.CredentialBroker` plus the standard health service
(`grpc.health.v1`, for Kubernetes gRPC probes) and server reflection (for grpcurl), on its own
internal address, optionally with TLS or mTLS. It runs in the same event loop as the HTTP
listeners and drains with them."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError, Message
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from broker.delivery.grpc_api import CredentialBrokerServicer
from broker.rpc.v1 import credential_broker_pb2 as pb
from broker.settings import GrpcSettings
from issuer.errors import ConfigError

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["CredentialBroker"].full_name
# Requests are small; anything bigger is a mistake or an attack (as on the HTTP listener).
MAX_MESSAGE_BYTES = 64 * 1024
OPTIONS = (
    # grpcio sets SO_REUSEPORT by default, which would let a second process bind the same
    # port silently and steal half the calls. One listener per address.
    ("grpc.so_reuseport", 0),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    # Agents keep channels open; notice dead peers, never let a client ping us to death.
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
)


Handler = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Message]]


def broker_handlers(servicer: CredentialBrokerServicer) -> grpc.GenericRpcHandler:
    """The service's methods, each decoding its own request: grpcio answers a request that
    fails to parse with UNKNOWN; we answer INVALID_ARGUMENT saying what was wrong."""
    service = pb.DESCRIPTOR.services_by_name["CredentialBroker"]
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
    for method in service.methods:
        request_type: type[Message] = getattr(pb, method.input_type.name)
        response_type: type[Message] = getattr(pb, method.output_type.name)
        handlers[method.name] = grpc.unary_unary_rpc_method_handler(
            _decoding(request_type, getattr(servicer, method.name)),
            request_deserializer=None,  # raw bytes in; _decoding parses them
            response_serializer=response_type.SerializeToString,
        )
    return grpc.method_handlers_generic_handler(service.full_name, handlers)


def _decoding(request_type: type[Message], handler: Handler) -> Handler:
    async def decode_then_handle(raw: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Message:
        try:
            request = request_type.FromString(raw)
        except DecodeError:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"the request is not a valid {request_type.DESCRIPTOR.full_name} message",
            )
        return await handler(request, context)

    return decode_then_handle


class GrpcServer:
    def __init__(self, servicer: CredentialBrokerServicer, settings: GrpcSettings) -> None:
        self._settings = settings
        self._server = grpc.aio.server(options=OPTIONS)
        self._health = health.aio.HealthServicer()
        self._server.add_generic_rpc_handlers((broker_handlers(servicer),))
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self._server
        )
        self.port = 0

    @property
    def address(self) -> str:
        return str(self._settings.addr)

    async def start(self) -> None:
        """Bind and serve; a taken or invalid address is a ConfigError naming the setting."""
        target = self.address
        try:
            credentials = self._credentials()
            self.port = (
                self._server.add_insecure_port(target)
                if credentials is None
                else self._server.add_secure_port(target, credentials)
            )
        except RuntimeError as exc:
            raise ConfigError(
                f"WARRANT_GRPC_ADDR={self.address}: cannot listen there ({exc}); choose a free "
                "address, or WARRANT_GRPC_ADDR=off"
            ) from None
        await self._server.start()
        for service in ("", SERVICE_NAME):
            await self._health.set(service, health_pb2.HealthCheckResponse.SERVING)

    async def stop(self, grace: float) -> None:
        """Report NOT_SERVING (so probes and balancers move on), refuse new calls, and give
        in-flight calls `grace` seconds to finish."""
        await self._health.enter_graceful_shutdown()
        await self._server.stop(grace)

    def _credentials(self) -> grpc.ServerCredentials | None:
        tls = self._settings.tls
        if tls is None:
            return None
        try:
            pair = (tls.key.read_bytes(), tls.cert.read_bytes())
            ca = self._settings.client_ca.read_bytes() if self._settings.client_ca else None
        except OSError as exc:
            raise ConfigError(
                f"WARRANT_GRPC_TLS_*: cannot read {exc.filename}: {exc.strerror}"
            ) from None
        return grpc.ssl_server_credentials(
            [pair], root_certificates=ca, require_client_auth=ca is not None
        )
