"""Pick the transport for a server URL: ``http(s)://`` is REST, ``grpc://`` gRPC, ``grpcs://`` gRPC over TLS."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from service.client.types import AsyncTransport, Transport

DEFAULT_URL = "http://127.0.0.1:8000"
GRPC_SCHEMES = ("grpc", "grpcs")


@dataclass(frozen=True)
class Endpoint:
    """Where and how to reach a server."""

    url: str
    api_key: str | None = None
    root_certificates: bytes | None = None  # PEM roots for grpcs:// (None: the system's)
    max_message_bytes: int = 64 * 1024 * 1024

    @property
    def scheme(self) -> str:
        """The URL scheme, lower-case."""
        scheme = urlsplit(self.url).scheme.lower()
        if scheme not in ("http", "https", *GRPC_SCHEMES):
            raise ValueError(f"unsupported URL {self.url!r}: use http://, https://, grpc:// or grpcs://")
        return scheme

    @property
    def grpc_target(self) -> str:
        """``host:port`` for a grpc:// URL."""
        target = urlsplit(self.url).netloc
        if not target:
            raise ValueError(f"no host:port in {self.url!r}")
        return target


def _grpc_args(endpoint: Endpoint) -> dict[str, Any]:
    return {
        "target": endpoint.grpc_target, "tls": endpoint.scheme == "grpcs", "api_key": endpoint.api_key,
        "root_certificates": endpoint.root_certificates, "max_message_bytes": endpoint.max_message_bytes,
    }


def aconnect(endpoint: Endpoint) -> AsyncTransport:
    """An asyncio transport for the endpoint (create it inside the event loop that uses it)."""
    if endpoint.scheme in GRPC_SCHEMES:
        from service.client.grpc import AsyncGrpcTransport

        return AsyncGrpcTransport(**_grpc_args(endpoint))
    from service.client.rest import AsyncRestTransport

    return AsyncRestTransport(endpoint.url, api_key=endpoint.api_key)


def connect(endpoint: Endpoint) -> Transport:
    """A blocking transport for the endpoint: ``aconnect``'s, run on an event loop thread of its own."""
    if endpoint.scheme in GRPC_SCHEMES:
        from service.client.grpc import GrpcTransport

        return GrpcTransport(**_grpc_args(endpoint))
    from service.client.rest import RestTransport

    return RestTransport(endpoint.url, api_key=endpoint.api_key)
