"""``AsyncClipClient``: the asyncio Python client (REST or gRPC, chosen by the URL scheme).

It is the client's one implementation: the blocking ``ClipClient`` runs it on an event loop thread.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

import numpy as np

from service.client.base import ClientOptions, classify_spec, concat, texts_list
from service.client.chunks import ImageSource, chunk_slices, load_images, map_chunks, progress_bar, want_progress
from service.client.connect import DEFAULT_URL, Endpoint, aconnect
from service.client.retry import acall_with_retry
from service.client.types import AsyncTransport, Input, LabelScore, Similarity
from service.protocol.model_info import ModelInfo

R = TypeVar("R")


class AsyncClipClient:
    """asyncio client: the helpers of ``ClipClient`` (which runs this class), as coroutines.

    Create it inside the event loop that uses it. Each helper splits its inputs into chunks of
    ``chunk_size``, sends ``concurrency`` at a time, retries each chunk under ``retry``, and keeps order.

    >>> async with AsyncClipClient("grpc://127.0.0.1:50051") as client:
    ...     vectors = await client.embed_images(["a.jpg", "b.png"])
    """

    def __init__(
        self, url: str = DEFAULT_URL, *, api_key: str | None = None, root_certificates: bytes | None = None,
        transport: AsyncTransport | None = None, **options: Any,
    ) -> None:
        self.options = ClientOptions(**options)
        self.endpoint = Endpoint(url, api_key=api_key, root_certificates=root_certificates)
        self.transport = transport or aconnect(self.endpoint)

    async def _map(self, n: int, fn: Callable[[slice], Awaitable[R]], progress: bool | None, desc: str) -> list[R]:
        """``fn`` on chunks of ``range(n)``, ``concurrency`` at a time, each retried; results in order."""
        if n == 0:
            raise ValueError(f"{desc}: nothing to do (no inputs)")
        show = want_progress(self.options.progress if progress is None else progress, n)
        with progress_bar(n, show, desc) as bar:
            return await map_chunks(chunk_slices(n, self.options.chunk_size),
                                    lambda s: acall_with_retry(lambda: fn(s), self.options.retry),
                                    self.options.concurrency, bar)

    async def embed(
        self, inputs: Sequence[Input], *, model: str | None = None, progress: bool | None = None
    ) -> np.ndarray:
        """(N, D) L2-normalised embeddings of texts (``str``), images (``bytes``) and ``ImageUrl``s, in order."""
        items = list(inputs)
        t = self.options.timeout_s
        parts = await self._map(len(items), lambda s: self.transport.embed(items[s], model, t), progress, "embed")
        return concat(parts)

    async def embed_texts(
        self, texts: Iterable[str], *, model: str | None = None, progress: bool | None = None
    ) -> np.ndarray:
        """(N, D) embeddings of texts, in order."""
        return await self.embed(texts_list(texts), model=model, progress=progress)

    async def embed_images(
        self, images: Sequence[ImageSource], *, model: str | None = None, progress: bool | None = None
    ) -> np.ndarray:
        """(N, D) embeddings of images: file paths, encoded bytes or http(s) URLs (files read chunk by chunk)."""
        t = self.options.timeout_s

        async def chunk(s: slice) -> np.ndarray:
            return await self.transport.embed(await load_images(images[s]), model, t)

        return concat(await self._map(len(images), chunk, progress, "embed images"))

    async def classify(
        self, images: Sequence[ImageSource], labels: Sequence[str] | None = None, *, label_set: str | None = None,
        templates: Sequence[str] | None = None, top_k: int = 5, logits: bool = False, model: str | None = None,
        progress: bool | None = None,
    ) -> list[list[LabelScore]]:
        """Zero-shot labels per image (best first), against ``labels`` or a named ``label_set``."""
        spec = classify_spec(labels, label_set, templates, top_k, logits)
        t = self.options.timeout_s

        async def chunk(s: slice) -> list[list[LabelScore]]:
            return await self.transport.classify(await load_images(images[s]), spec, model, t)

        return [ranked for part in await self._map(len(images), chunk, progress, "classify") for ranked in part]

    async def similarity(
        self, left: Sequence[Input], right: Sequence[Input], *, model: str | None = None
    ) -> Similarity:
        """Cosine similarities and probabilities between two input lists (``left`` sent in chunks)."""
        t = self.options.timeout_s
        parts = await self._map(
            len(left), lambda s: self.transport.similarity(left[s], right, model, t), None, "similarity"
        )
        return Similarity(parts[0].model, concat([p.cosine for p in parts]), concat([p.probabilities for p in parts]))

    async def models(self) -> list[ModelInfo]:
        """The served models; the first is the default."""
        return await acall_with_retry(lambda: self.transport.models(self.options.timeout_s), self.options.retry)

    async def close(self) -> None:
        """Close the connections."""
        await self.transport.close()

    async def __aenter__(self) -> AsyncClipClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
