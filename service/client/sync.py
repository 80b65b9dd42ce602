"""``ClipClient``: the blocking Python client (REST or gRPC, chosen by the URL scheme).

It is a thin shell: an ``AsyncClipClient`` (the one implementation of chunking, concurrency,
retries and progress) running on a private event loop in a daemon thread (``LoopThread``). Each
method runs the asyncio client's coroutine there and waits for it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from service.client.aio import AsyncClipClient
from service.client.base import ClientOptions
from service.client.blocking import BlockingTransport, ThreadedTransport
from service.client.chunks import ImageSource
from service.client.connect import DEFAULT_URL, Endpoint
from service.client.loop import LoopThread, closer
from service.client.types import Input, LabelScore, Similarity, Transport
from service.protocol.model_info import ModelInfo


async def _open(
    url: str, api_key: str | None, root_certificates: bytes | None, transport: Transport | None, options: Any
) -> AsyncClipClient:
    threaded = ThreadedTransport(transport) if transport is not None else None
    return AsyncClipClient(url, api_key=api_key, root_certificates=root_certificates, transport=threaded, **options)


class ClipClient:
    """Blocking client. Long inputs are split into chunks sent concurrently, each retried on overload.

    The same helpers and options as ``AsyncClipClient``, whose coroutines it runs on an event loop
    thread of its own: it can be called from several threads at once, and from inside a running
    event loop. ``close()`` (or leaving the ``with`` block) closes the connections and stops the thread.

    >>> with ClipClient("grpc://127.0.0.1:50051") as client:  # or "http://127.0.0.1:8000"
    ...     vectors = client.embed_texts(["a dog", "a cat"])
    """

    def __init__(
        self, url: str = DEFAULT_URL, *, api_key: str | None = None, root_certificates: bytes | None = None,
        transport: Transport | None = None, **options: Any,
    ) -> None:
        self._loop = LoopThread()
        try:
            client = self._loop.run(_open(url, api_key, root_certificates, transport, options))
        except BaseException:
            self._loop.close()
            raise
        self._client = client
        self._close = closer(self, self._loop, client.close, owns_loop=True)
        self.transport: Transport = transport or BlockingTransport(lambda: client.transport, self._loop)
        """One blocking call per method, without chunks or retries (``transport=``, else the URL's)."""

    @property
    def options(self) -> ClientOptions:
        """Chunk size, concurrency, timeout, retry policy and progress default (shared with the asyncio client)."""
        return self._client.options

    @property
    def endpoint(self) -> Endpoint:
        """The server's URL, API key and TLS roots."""
        return self._client.endpoint

    def embed(self, inputs: Sequence[Input], *, model: str | None = None, progress: bool | None = None) -> np.ndarray:
        """(N, D) L2-normalised embeddings of texts (``str``), images (``bytes``) and ``ImageUrl``s, in order."""
        return self._loop.run(self._client.embed(inputs, model=model, progress=progress))

    def embed_texts(
        self, texts: Iterable[str], *, model: str | None = None, progress: bool | None = None
    ) -> np.ndarray:
        """(N, D) embeddings of texts, in order."""
        return self._loop.run(self._client.embed_texts(texts, model=model, progress=progress))

    def embed_images(
        self, images: Sequence[ImageSource], *, model: str | None = None, progress: bool | None = None
    ) -> np.ndarray:
        """(N, D) embeddings of images: file paths, encoded bytes or http(s) URLs (files read chunk by chunk)."""
        return self._loop.run(self._client.embed_images(images, model=model, progress=progress))

    def classify(
        self, images: Sequence[ImageSource], labels: Sequence[str] | None = None, *, label_set: str | None = None,
        templates: Sequence[str] | None = None, top_k: int = 5, logits: bool = False, model: str | None = None,
        progress: bool | None = None,
    ) -> list[list[LabelScore]]:
        """Zero-shot labels per image (best first), against ``labels`` or a named ``label_set``."""
        return self._loop.run(self._client.classify(
            images, labels, label_set=label_set, templates=templates, top_k=top_k, logits=logits, model=model,
            progress=progress,
        ))

    def similarity(self, left: Sequence[Input], right: Sequence[Input], *, model: str | None = None) -> Similarity:
        """Cosine similarities and probabilities between two input lists (``left`` sent in chunks)."""
        return self._loop.run(self._client.similarity(left, right, model=model))

    def models(self) -> list[ModelInfo]:
        """The served models; the first is the default."""
        return self._loop.run(self._client.models())

    def close(self) -> None:
        """Close the connections and stop the event loop thread. Calling it again does nothing."""
        self._close()

    def __enter__(self) -> ClipClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
