"""gRPC transports for ``clipserve.v1.ClipService``: ``AsyncGrpcTransport``, and ``GrpcTransport`` that runs it
on an event loop thread for blocking callers.

Each method builds its request, calls the stub with the deadline and ``x-api-key`` metadata, and
turns ``grpc.RpcError`` into ``RequestFailed`` with the server's error kind (read from the trailing
metadata ``clipserve-error-kind``; guessed from the status code when absent). ``embed_stream``
exposes the bulk EmbedStream RPC.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator, Sequence
from typing import Any

import grpc
import numpy as np

from service.client.blocking import BlockingTransport
from service.client.errors import RequestFailed
from service.client.types import ClassifySpec, Image, ImageUrl, Input, LabelScore, Similarity
from service.protocol.errors import ErrorKind
from service.protocol.generated.clipserve.v1 import clipserve_pb2 as pb
from service.protocol.generated.clipserve.v1 import clipserve_pb2_grpc as pb_grpc
from service.protocol.headers import API_KEY_HEADER, ERROR_KIND_KEY, RETRY_AFTER_KEY
from service.protocol.model_info import ModelInfo
from service.protocol.wire import matrix_from_pb, vector_from_bytes

StreamResult = tuple[str, np.ndarray | RequestFailed]
Op = tuple[str, Any, Callable[[Any], Any]]  # (stub method, request, response parser)

_KIND_BY_CODE = {
    grpc.StatusCode.INVALID_ARGUMENT: ErrorKind.INVALID,
    grpc.StatusCode.NOT_FOUND: ErrorKind.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ErrorKind.OVERLOADED,
    grpc.StatusCode.DEADLINE_EXCEEDED: ErrorKind.TIMEOUT,
    grpc.StatusCode.UNAVAILABLE: ErrorKind.UNAVAILABLE,
    grpc.StatusCode.CANCELLED: ErrorKind.CANCELLED,
}
_CODE_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


def error_from_status(code: grpc.StatusCode, details: str, metadata: Iterable[tuple[str, Any]] = ()) -> RequestFailed:
    """A ``RequestFailed`` for a gRPC status, its message and its trailing metadata."""
    meta = {key: value for key, value in metadata}
    kind = _KIND_BY_CODE.get(code, ErrorKind.INTERNAL)
    if ERROR_KIND_KEY in meta:
        kind = ErrorKind(meta[ERROR_KIND_KEY])
    elif code == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in details:
        kind = ErrorKind.TOO_LARGE  # gRPC's own message-size limit
    retry_after = float(meta[RETRY_AFTER_KEY]) if RETRY_AFTER_KEY in meta else None
    return RequestFailed(details or code.name, kind=kind, status=code.name, retry_after_s=retry_after)


def error_from_rpc(error: grpc.RpcError) -> RequestFailed:
    """A ``RequestFailed`` for a failed call."""
    return error_from_status(error.code(), error.details() or "", error.trailing_metadata() or ())


def item_pb(value: Input) -> pb.Item:
    """A text (``str``), an encoded image (``bytes``) or an image URL (``ImageUrl``) as an ``Item`` message."""
    if isinstance(value, str):
        return pb.Item(text=value)
    if isinstance(value, bytes | bytearray | memoryview):
        return pb.Item(image=bytes(value))
    if isinstance(value, ImageUrl):
        return pb.Item(image_url=value.url)
    raise TypeError(f"an input is a str (text), bytes (encoded image) or an ImageUrl, got {type(value).__name__}")


def _model_info(m: pb.ModelInfo) -> ModelInfo:
    return ModelInfo(
        name=m.name, dimension=m.dimension, image_size=m.image_size, context_length=m.context_length,
        logit_scale=m.logit_scale, backend=m.backend, precision=m.precision, device=m.device,
        providers=tuple(m.providers), fingerprint=m.fingerprint, extra=dict(m.extra),
        scoring=m.scoring or "softmax", logit_bias=m.logit_bias if m.HasField("logit_bias") else None,
        backend_reason=m.backend_reason,
    )


def _labels(response: pb.ClassifyResponse) -> list[list[LabelScore]]:
    return [[LabelScore(s.label, s.score) for s in ranked.labels] for ranked in response.results]


def _similarity(r: pb.SimilarityResponse) -> Similarity:
    return Similarity(r.model, matrix_from_pb(r.cosine), matrix_from_pb(r.probabilities))


def embed_op(inputs: Sequence[Input], model: str | None) -> Op:
    """The Embed call for some inputs."""
    request = pb.EmbedRequest(items=[item_pb(x) for x in inputs], model=model or "")
    return "Embed", request, lambda r: matrix_from_pb(r.embeddings)


def classify_op(images: Sequence[Image], spec: ClassifySpec, model: str | None) -> Op:
    """The Classify call for some images (with a URL among them: as ``image_items``)."""
    with_urls = any(isinstance(x, ImageUrl) for x in images)
    request = pb.ClassifyRequest(
        images=[] if with_urls else [bytes(x) for x in images],  # type: ignore[arg-type]
        image_items=[item_pb(x) for x in images] if with_urls else [],
        labels=list(spec.labels), templates=list(spec.templates),
        label_set=spec.label_set or "", top_k=spec.top_k, logits=spec.logits, model=model or "",
    )
    return "Classify", request, _labels


def similarity_op(left: Sequence[Input], right: Sequence[Input], model: str | None) -> Op:
    """The Similarity call for two input lists."""
    request = pb.SimilarityRequest(
        left=[item_pb(x) for x in left], right=[item_pb(x) for x in right], model=model or ""
    )
    return "Similarity", request, _similarity


def models_op() -> Op:
    """The ListModels call."""
    return "ListModels", pb.ListModelsRequest(), lambda r: [_model_info(m) for m in r.models]


def stream_request(item_id: str, value: Input, model: str | None) -> pb.EmbedStreamRequest:
    """One EmbedStream request message."""
    return pb.EmbedStreamRequest(id=item_id, item=item_pb(value), model=model or "")


def stream_result(response: pb.EmbedStreamResponse) -> StreamResult:
    """One EmbedStream response as (id, embedding or the item's error)."""
    if response.WhichOneof("result") == "error":
        code = _CODE_BY_NUMBER.get(response.error.code, grpc.StatusCode.UNKNOWN)
        return response.id, error_from_status(code, response.error.message)
    return response.id, vector_from_bytes(response.embedding)


def channel_options(max_message_bytes: int) -> list[tuple[str, int]]:
    """Channel options: message size limits both ways."""
    return [("grpc.max_receive_message_length", max_message_bytes), ("grpc.max_send_message_length", max_message_bytes)]


class AsyncGrpcTransport:
    """asyncio gRPC transport on one grpc.aio channel (create it inside the event loop that uses it)."""

    def __init__(
        self, target: str, *, tls: bool = False, root_certificates: bytes | None = None,
        api_key: str | None = None, max_message_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self.target = target
        self.metadata = ((API_KEY_HEADER, api_key),) if api_key else ()
        options = channel_options(max_message_bytes)
        if tls:
            credentials = grpc.ssl_channel_credentials(root_certificates)
            self._channel = grpc.aio.secure_channel(target, credentials, options=options)
        else:
            self._channel = grpc.aio.insecure_channel(target, options=options)
        self._stub = pb_grpc.ClipServiceStub(self._channel)

    async def _run(self, op: Op, timeout_s: float | None) -> Any:
        method, request, parse = op
        try:
            response = await getattr(self._stub, method)(request, timeout=timeout_s, metadata=self.metadata)
        except grpc.RpcError as error:
            raise error_from_rpc(error) from None
        return parse(response)

    async def embed(self, inputs: Sequence[Input], model: str | None, timeout_s: float | None) -> np.ndarray:
        """Embed inputs in one call."""
        return await self._run(embed_op(inputs, model), timeout_s)  # type: ignore[no-any-return]

    async def classify(
        self, images: Sequence[Image], spec: ClassifySpec, model: str | None, timeout_s: float | None
    ) -> list[list[LabelScore]]:
        """Classify images in one call."""
        return await self._run(classify_op(images, spec, model), timeout_s)  # type: ignore[no-any-return]

    async def similarity(
        self, left: Sequence[Input], right: Sequence[Input], model: str | None, timeout_s: float | None
    ) -> Similarity:
        """Similarity in one call."""
        return await self._run(similarity_op(left, right, model), timeout_s)  # type: ignore[no-any-return]

    async def models(self, timeout_s: float | None) -> list[ModelInfo]:
        """The served models."""
        return await self._run(models_op(), timeout_s)  # type: ignore[no-any-return]

    async def embed_stream(
        self, items: AsyncIterable[tuple[str, Input]] | Iterable[tuple[str, Input]], model: str | None = None,
        timeout_s: float | None = None,
    ) -> AsyncIterator[StreamResult]:
        """Bulk embedding over EmbedStream: yields (id, embedding or RequestFailed) in completion order."""

        async def requests() -> AsyncIterator[pb.EmbedStreamRequest]:
            if isinstance(items, AsyncIterable):
                async for item_id, value in items:
                    yield stream_request(item_id, value, model)
            else:
                for item_id, value in items:
                    yield stream_request(item_id, value, model)

        call = self._stub.EmbedStream(requests(), timeout=timeout_s, metadata=self.metadata)
        try:
            async for response in call:
                yield stream_result(response)
        except grpc.RpcError as error:
            raise error_from_rpc(error) from None
        finally:
            call.cancel()

    async def close(self) -> None:
        """Close the channel."""
        await self._channel.close()


class GrpcTransport(BlockingTransport[AsyncGrpcTransport]):
    """Blocking gRPC transport: an ``AsyncGrpcTransport`` on an event loop thread of its own (thread-safe).

    Takes ``AsyncGrpcTransport``'s arguments: ``target`` (``host:port``), ``tls``, ``root_certificates``,
    ``api_key``, ``max_message_bytes``.
    """

    def __init__(self, target: str, **kwargs: Any) -> None:
        super().__init__(lambda: AsyncGrpcTransport(target, **kwargs))

    def embed_stream(
        self, items: Iterable[tuple[str, Input]], model: str | None = None, timeout_s: float | None = None
    ) -> Iterator[StreamResult]:
        """Bulk embedding over EmbedStream: yields (id, embedding or RequestFailed) in completion order.

        ``items`` is read on the transport's event loop thread as the server's window lets it upload.
        """
        return self.loop.iterate(self.inner.embed_stream(items, model, timeout_s))
