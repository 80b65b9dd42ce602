"""``clipserve.v1.ClipService``: each RPC translates its message and calls the shared ``Engine``.

Every call passes the client's remaining deadline as the engine timeout (so items that expire in
the queue are dropped before compute) and ``protocol="grpc"`` for the metrics. When the client
cancels, grpc.aio cancels the handler task; the ``CancelledError`` reaches the engine's await and
the batcher drops the call's items that are not computed yet (nothing here catches it).

Every method is decorated from ``service.grpc.request_id``: the call's request id (the client's
metadata ``x-request-id`` or a new one) is on every log line the call causes and in its trailing
metadata, whether it succeeds or fails, and the call writes one access line.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import grpc

from service.engine import Engine
from service.errors import ClipServeError, DeadlineExceeded
from service.grpc import convert
from service.grpc.request_id import stream_call, unary_call
from service.grpc.status import status_of, trailing_metadata
from service.grpc.stream import EmbedStreamer
from service.protocol.generated.clipserve.v1 import clipserve_pb2 as pb
from service.protocol.generated.clipserve.v1 import clipserve_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)
PROTOCOL = "grpc"
T = TypeVar("T")


def time_left(context: grpc.aio.ServicerContext) -> float | None:
    """Seconds until the client's deadline, or None when it set none; DeadlineExceeded once it passed."""
    remaining = context.time_remaining()
    if remaining is None:
        return None
    if remaining <= 0:
        raise DeadlineExceeded("the call's deadline passed before its work started")
    return float(remaining)


async def abort_with(context: grpc.aio.ServicerContext, error: ClipServeError) -> NoReturn:
    """End the call with the error's status, message and trailing metadata (the request id kept)."""
    await context.abort(status_of(error), error.message, trailing_metadata(error, context.trailing_metadata()))
    raise AssertionError("context.abort returned")  # pragma: no cover - abort always raises


async def run_call(context: grpc.aio.ServicerContext, call: Callable[[], Awaitable[T]]) -> T:
    """Await ``call``; turn domain errors into their status and anything else into INTERNAL."""
    try:
        return await call()
    except ClipServeError as error:
        await abort_with(context, error)
    except Exception:
        log.exception("gRPC call failed")
        await context.abort(grpc.StatusCode.INTERNAL, "internal error (logged on the server)")
        raise AssertionError("context.abort returned") from None  # pragma: no cover


class ClipServicer(pb_grpc.ClipServiceServicer):
    """The ClipService RPCs on one ``Engine``."""

    def __init__(self, engine: Engine, stream_window: int) -> None:
        self._engine = engine
        self._streamer = EmbedStreamer(engine, window=stream_window, protocol=PROTOCOL)

    @unary_call
    async def Embed(self, request: pb.EmbedRequest, context: grpc.aio.ServicerContext) -> pb.EmbedResponse:
        """Embed texts and images in one call."""

        async def call() -> pb.EmbedResponse:
            items = convert.items_from_pb(request.items, "items")
            timeout_s = time_left(context)
            result = await self._engine.embed(
                items, model=convert.model_arg(request.model), timeout_s=timeout_s, protocol=PROTOCOL, field="items"
            )
            return convert.embed_response(result)

        return await run_call(context, call)

    @stream_call
    async def EmbedStream(
        self, request_iterator: AsyncIterator[pb.EmbedStreamRequest], context: grpc.aio.ServicerContext
    ) -> AsyncGenerator[pb.EmbedStreamResponse, None]:
        """Bulk embedding, one item per message, with a bounded in-flight window."""
        async for response in self._streamer.run(request_iterator, lambda: time_left(context)):
            yield response

    @unary_call
    async def Classify(self, request: pb.ClassifyRequest, context: grpc.aio.ServicerContext) -> pb.ClassifyResponse:
        """Zero-shot labels for each image."""

        async def call() -> pb.ClassifyResponse:
            result = await self._engine.classify(
                convert.classify_images(request),
                labels=list(request.labels) or None,
                templates=list(request.templates) or None,
                label_set=request.label_set or None,
                top_k=convert.top_k_arg(request),
                logits=request.logits,
                model=convert.model_arg(request.model),
                timeout_s=time_left(context),
                protocol=PROTOCOL,
                field="image_items" if request.image_items else "images",
            )
            return convert.classify_response(result)

        return await run_call(context, call)

    @unary_call
    async def Similarity(
        self, request: pb.SimilarityRequest, context: grpc.aio.ServicerContext
    ) -> pb.SimilarityResponse:
        """Cosine similarity and probabilities between two item lists."""

        async def call() -> pb.SimilarityResponse:
            left = convert.items_from_pb(request.left, "left")
            right = convert.items_from_pb(request.right, "right")
            result = await self._engine.similarity(
                left, right, model=convert.model_arg(request.model), timeout_s=time_left(context),
                protocol=PROTOCOL,
            )
            return convert.similarity_response(result)

        return await run_call(context, call)

    @unary_call
    async def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListModelsResponse:
        """The served models, default first."""

        async def call() -> pb.ListModelsResponse:
            return pb.ListModelsResponse(models=[convert.model_info_pb(m) for m in self._engine.models()])

        return await run_call(context, call)


def add_to_server(servicer: ClipServicer, server: Any) -> None:
    """Register the servicer on a grpc.aio server."""
    pb_grpc.add_ClipServiceServicer_to_server(servicer, server)
