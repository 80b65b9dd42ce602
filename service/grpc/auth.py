"""API-key check for gRPC: a server interceptor that wants metadata ``x-api-key: <key>`` or
``authorization: Bearer <key>`` (any of the server's keys; ``service.auth`` does the comparing).

The health service stays open (probes carry no key); every other method, reflection included,
answers UNAUTHENTICATED without the right key.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from service.auth import DENIED_GRPC, ApiKeys, bearer_token
from service.protocol.headers import API_KEY_HEADER, AUTHORIZATION_HEADER

OPEN_PREFIXES = ("/grpc.health.v1.Health/",)
DENIED = DENIED_GRPC


def _denying_handler(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """A handler of the same shape as ``handler`` that answers UNAUTHENTICATED."""

    async def deny(_request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, DENIED)

    codec = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(deny, **codec)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(deny, **codec)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(deny, **codec)
    return grpc.stream_stream_rpc_method_handler(deny, **codec)


class ApiKeyInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Lets a call through only when its ``x-api-key`` (or ``authorization: Bearer``) is an accepted key."""

    def __init__(self, keys: ApiKeys) -> None:
        self._keys = keys

    def _allowed(self, details: grpc.HandlerCallDetails) -> bool:
        if details.method.startswith(OPEN_PREFIXES):
            return True
        api_key: str | bytes | None = None
        token: str | None = None
        for key, value in details.invocation_metadata or ():
            if key == API_KEY_HEADER and api_key is None:
                api_key = value
            elif key == AUTHORIZATION_HEADER and token is None:
                token = bearer_token(value)
        return self._keys.accepts(api_key, token)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        """Pass allowed calls on; answer the rest UNAUTHENTICATED."""
        handler = await continuation(handler_call_details)
        if handler is None or self._allowed(handler_call_details):
            return handler
        return _denying_handler(handler)
