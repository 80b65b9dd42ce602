"""EmbedStream: bulk embedding over one bidirectional stream, with a bounded in-flight window.

A reader task takes one request message at a time and starts its item only after taking a slot
of the window (a semaphore); the slot frees when the item's response has been sent. While the
window is full the reader stops reading, so gRPC's own flow control pushes back on a fast client
instead of the batcher queue filling up, and a client that reads slowly cannot make the server
buffer more than the window either. Each item is its
own engine call (the batcher groups them into batches); results go out in completion order,
tagged with the client's id. A failed item yields an error response for its id; the stream goes
on. When the call ends early (client cancel, deadline) every pending item task is cancelled, which
drops its items from the batcher. The item tasks copy the call's context, so every item's engine
call and batch carries the stream's request id (``service.grpc.request_id.stream_call``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable

import grpc

from service.engine import Engine
from service.errors import ClipServeError
from service.grpc.convert import item_from_pb, model_arg
from service.grpc.status import status_of
from service.protocol.generated.clipserve.v1 import clipserve_pb2 as pb
from service.protocol.wire import vector_to_bytes

log = logging.getLogger(__name__)
_DONE = None
_ENGINE_FIELD = "item"  # errors name the one item of each call "item[0]" until the id replaces it


class EmbedStreamer:
    """Runs EmbedStream calls on an engine with at most ``window`` items in flight per stream."""

    def __init__(self, engine: Engine, window: int, protocol: str = "grpc") -> None:
        if window < 1:
            raise ValueError("window must be at least 1")
        self.engine = engine
        self.window = window
        self.protocol = protocol

    async def embed_one(
        self, request: pb.EmbedStreamRequest, time_left: Callable[[], float | None]
    ) -> pb.EmbedStreamResponse:
        """One item's response: its embedding, or the error that stopped it."""
        try:
            item = item_from_pb(request.item, f"{_ENGINE_FIELD}[0]")
            result = await self.engine.embed(
                [item], model=model_arg(request.model), timeout_s=time_left(), protocol=self.protocol,
                field=_ENGINE_FIELD,
            )
        except ClipServeError as error:
            code = status_of(error).value[0]
            message = f"item {request.id!r}: {error.message.removeprefix(_ENGINE_FIELD + '[0]: ')}"
            return pb.EmbedStreamResponse(id=request.id, error=pb.ItemError(code=code, message=message))
        except Exception:
            log.exception("EmbedStream item %r failed", request.id)
            code = grpc.StatusCode.INTERNAL.value[0]
            return pb.EmbedStreamResponse(
                id=request.id, error=pb.ItemError(code=code, message="internal error (logged on the server)")
            )
        return pb.EmbedStreamResponse(
            id=request.id, model=result.model, embedding=vector_to_bytes(result.embeddings[0])
        )

    async def run(
        self, requests: AsyncIterator[pb.EmbedStreamRequest], time_left: Callable[[], float | None]
    ) -> AsyncIterator[pb.EmbedStreamResponse]:
        """Yield one response per request, in completion order."""
        out: asyncio.Queue[pb.EmbedStreamResponse | None] = asyncio.Queue()
        slots = asyncio.Semaphore(self.window)
        pending: set[asyncio.Task[None]] = set()

        async def work(request: pb.EmbedStreamRequest) -> None:
            try:
                response = await self.embed_one(request, time_left)
            except BaseException:
                slots.release()
                raise
            out.put_nowait(response)  # its slot frees once the response is sent

        async def read() -> None:
            try:
                async for request in requests:
                    await slots.acquire()
                    task = asyncio.create_task(work(request))
                    pending.add(task)
                    task.add_done_callback(pending.discard)
                while pending:
                    await asyncio.wait(set(pending))
            finally:
                out.put_nowait(_DONE)

        reader = asyncio.create_task(read())
        try:
            while (response := await out.get()) is not _DONE:
                yield response
                slots.release()
            await reader  # re-raise what stopped the reader, if anything
        finally:
            reader.cancel()
            for task in list(pending):
                task.cancel()
