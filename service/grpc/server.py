"""Start and stop the grpc.aio server that runs beside REST on the same ``Engine``.

The serving side calls ``start_grpc(engine, settings)`` in the app lifespan (or ``serve``) and
``await handle.stop(grace)`` on shutdown. The server carries ClipService, grpc.health.v1
(reflecting ``engine.ready``) and server reflection; it honours ``grpc_max_message_bytes``,
TLS (``grpc_tls_cert`` + ``grpc_tls_key``) and API keys (metadata ``x-api-key`` or ``authorization: Bearer``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from service.config import Settings
from service.engine import Engine
from service.grpc.auth import ApiKeyInterceptor
from service.grpc.health import ReadinessHealthServicer
from service.grpc.servicer import ClipServicer, add_to_server
from service.protocol.generated.clipserve.v1 import clipserve_pb2 as pb

log = logging.getLogger(__name__)
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["ClipService"].full_name
HEALTH_SERVICE_NAME = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name


@dataclass
class GrpcServer:
    """A running gRPC server: where it listens and how to stop it."""

    server: grpc.aio.Server
    health: ReadinessHealthServicer
    host: str
    port: int
    tls: bool

    @property
    def address(self) -> str:
        """``host:port`` to dial (IPv6 hosts in brackets)."""
        return f"{_host(self.host)}:{self.port}"

    async def stop(self, grace: float | None = None) -> None:
        """Report NOT_SERVING, refuse new calls, let calls in flight finish for ``grace`` s, then cancel them."""
        await self.health.shutdown()
        await self.server.stop(grace)

    async def wait_for_termination(self) -> None:
        """Block until the server stops."""
        await self.server.wait_for_termination()


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def stream_window(settings: Settings) -> int:
    """Items one EmbedStream keeps in flight: two batches (one computing, one filling), within the queue."""
    return max(1, min(2 * settings.max_batch_size, settings.queue_size))


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS credentials from the configured PEM files, or None for plaintext."""
    cert, key = settings.grpc_tls_cert, settings.grpc_tls_key
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise ValueError("gRPC TLS needs both grpc_tls_cert and grpc_tls_key")
    return grpc.ssl_server_credentials([(key.read_bytes(), cert.read_bytes())])


def build_server(engine: Engine, settings: Settings) -> tuple[grpc.aio.Server, ReadinessHealthServicer]:
    """A grpc.aio server with ClipService, health and reflection added (not started)."""
    limit = settings.grpc_max_message_bytes
    server = grpc.aio.server(
        interceptors=[ApiKeyInterceptor(keys)] if (keys := settings.api_key_set()) else None,
        options=[("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit)],
    )
    add_to_server(ClipServicer(engine, stream_window(settings)), server)
    health_servicer = ReadinessHealthServicer(lambda: engine.ready, [SERVICE_NAME])
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((SERVICE_NAME, HEALTH_SERVICE_NAME, reflection.SERVICE_NAME), server)
    return server, health_servicer


async def start_grpc(
    engine: Engine, settings: Settings, *, host: str | None = None, port: int | None = None
) -> GrpcServer | None:
    """Start the gRPC server on ``settings.host:settings.grpc_port``; None when ``grpc_port`` is 0 (off).

    ``host``/``port`` override the settings (tests); an explicit ``port=0`` binds a free port, read
    it back from ``handle.port``.
    """
    if port is None:
        if settings.grpc_port == 0:
            return None
        port = settings.grpc_port
    host = host or settings.host
    server, health_servicer = build_server(engine, settings)
    credentials = server_credentials(settings)
    address = f"{_host(host)}:{port}"
    secure = credentials is not None
    bound = server.add_secure_port(address, credentials) if secure else server.add_insecure_port(address)
    if not bound:
        raise RuntimeError(f"gRPC could not bind {address}")
    await server.start()
    await health_servicer.start()
    log.info("gRPC listening on %s:%d (%s)", _host(host), bound, "TLS" if credentials else "plaintext")
    return GrpcServer(server=server, health=health_servicer, host=host, port=bound, tls=credentials is not None)
