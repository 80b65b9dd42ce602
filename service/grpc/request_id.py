"""The request id of a gRPC call, and its access line: what ``RequestContextMiddleware`` does for REST.

``unary_call`` and ``stream_call`` decorate the ClipService methods. Each call takes the client's
metadata ``x-request-id`` when usable (``service.logs.new_request_id``) or gets a new id, sets it in
``service.logs.REQUEST`` for the call (so engine and batcher lines carry it), and sends it back in
trailing metadata ``x-request-id``, on success and on error: it is set as the call's trailers at the
start, and an abort that passes trailers of its own keeps them (``status.trailing_metadata``). When
the call ends, one line on ``clipserve.access`` gives the method, its status code and duration.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Coroutine, Iterable
from contextlib import aclosing
from typing import Any, TypeVar

import grpc

from service.logs import REQUEST, RequestContext, new_request_id
from service.protocol.headers import REQUEST_ID_HEADER

access_log = logging.getLogger("clipserve.access")

S = TypeVar("S")  # the servicer
Req = TypeVar("Req")  # the request message (or the iterator of them)
Resp = TypeVar("Resp")  # the response message


def request_id_from(metadata: Iterable[tuple[str, Any]] | None) -> str:
    """The client's ``x-request-id`` when it is usable, else a new id."""
    for key, value in metadata or ():
        if key == REQUEST_ID_HEADER:
            return new_request_id(value if isinstance(value, str) else None)
    return new_request_id()


def status_name(context: grpc.aio.ServicerContext, error: BaseException | None) -> str:
    """The status the call ended with: what an abort (or ``set_code``) set, else what the outcome implies."""
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return str(code.name)
    if error is None:
        return "OK"
    if isinstance(error, (asyncio.CancelledError, GeneratorExit)):
        return "CANCELLED"
    return "UNKNOWN"  # what grpc.aio answers for an exception the handler let escape


class CallScope:
    """One call's request context (set on creation) and its access line (``finish``)."""

    def __init__(self, context: grpc.aio.ServicerContext, rpc: str) -> None:
        self.context = context
        self.rpc = rpc
        self.request = RequestContext(request_id_from(context.invocation_metadata()))
        self.token = REQUEST.set(self.request)
        context.set_trailing_metadata(((REQUEST_ID_HEADER, self.request.request_id),))
        self.begin = time.perf_counter()

    def finish(self, error: BaseException | None) -> None:
        """Write the access line: the method, its status and duration."""
        duration_ms = (time.perf_counter() - self.begin) * 1000
        status = status_name(self.context, error)
        access_log.info(
            "gRPC %s %s %.1fms", self.rpc, status, duration_ms,
            extra={"request_id": self.request.request_id, "protocol": "grpc", "rpc": self.rpc, "status": status,
                   "duration_ms": round(duration_ms, 3)},
        )


def unary_call(
    method: Callable[[S, Req, grpc.aio.ServicerContext], Awaitable[Resp]],
) -> Callable[[S, Req, grpc.aio.ServicerContext], Coroutine[Any, Any, Resp]]:
    """Decorate a unary servicer method: request id in context and trailers, one access line."""

    @functools.wraps(method)
    async def call(self: S, request: Req, context: grpc.aio.ServicerContext) -> Resp:
        scope = CallScope(context, method.__name__)
        try:
            response = await method(self, request, context)
        except BaseException as error:
            scope.finish(error)
            raise
        finally:
            REQUEST.reset(scope.token)
        scope.finish(None)
        return response

    return call


def stream_call(
    method: Callable[[S, Req, grpc.aio.ServicerContext], AsyncGenerator[Resp, None]],
) -> Callable[[S, Req, grpc.aio.ServicerContext], AsyncIterator[Resp]]:
    """Decorate a streaming servicer method (an async generator): as ``unary_call``, for the whole stream.

    The tasks the stream starts copy the context, so each item's engine call carries the id. The
    context variable is not reset: grpc.aio runs each call in a task of its own, which ends with the
    stream, while a generator may be closed from another task, where a reset would fail.
    """

    @functools.wraps(method)
    async def call(self: S, requests: Req, context: grpc.aio.ServicerContext) -> AsyncIterator[Resp]:
        scope = CallScope(context, method.__name__)
        try:
            async with aclosing(method(self, requests, context)) as responses:
                async for response in responses:
                    yield response
        except BaseException as error:
            scope.finish(error)
            raise
        scope.finish(None)

    return call
