"""``ClipClient``: the blocking Python client (REST or gRPC, chosen by the URL scheme)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import numpy as np

from service.client.base import ClientBase, ClientOptions, classify_spec, concat, texts_list
from service.client.chunks import ImageSource, load_image, run_chunks
from service.client.connect import DEFAULT_URL, Endpoint, connect
from service.client.retry import call_with_retry
from service.client.types import Input, Label, Similarity, Transport
from service.protocol.model_info import ModelInfo

R = TypeVar("R")


class ClipClient(ClientBase):
    """Blocking client. Long inputs are split into chunks sent concurrently, each retried on overload.

    >>> with ClipClient("grpc://127.0.0.1:50051") as client:  # or "http://127.0.0.1:8000"
    ...     vectors = client.embed_texts(["a dog", "a cat"])
    """

    def __init__(
        self, url: str = DEFAULT_URL, *, api_key: str | None = None, root_certificates: bytes | None = None,
        transport: Transport | None = None, **options: Any,
    ) -> None:
        super().__init__(ClientOptions(**options))
        self.endpoint = Endpoint(url, api_key=api_key, root_certificates=root_certificates)
        self.transport = transport or connect(self.endpoint)

    def _map(self, n: int, fn: Callable[[slice], R], progress: bool | None, desc: str) -> list[R]:
        slices, bar = self._plan(n, progress, desc)
        with bar:
            return run_chunks(slices, lambda s: call_with_retry(lambda: fn(s), self.options.retry),
                              self.options.concurrency, bar)

    def embed(self, inputs: Sequence[Input], *, model: str | None = None, progress: bool | None = None) -> np.ndarray:
        """(N, D) float32 L2-normalised embeddings of texts (``str``) and encoded images (``bytes``), in order."""
        items = list(inputs)
        t = self.options.timeout_s
        return concat(self._map(len(items), lambda s: self.transport.embed(items[s], model, t), progress, "embed"))

    def embed_texts(
        self, texts: Iterable[str], *, model: str | None = None, progress: bool | None = None
    ) -> np.ndarray:
        """(N, D) embeddings of texts, in order."""
        return self.embed(texts_list(texts), model=model, progress=progress)

    def embed_images(
        self, images: Sequence[ImageSource], *, model: str | None = None, progress: bool | None = None
    ) -> np.ndarray:
        """(N, D) embeddings of images given as file paths or encoded bytes (files read chunk by chunk)."""
        t = self.options.timeout_s

        def chunk(s: slice) -> np.ndarray:
            return self.transport.embed([load_image(x) for x in images[s]], model, t)

        return concat(self._map(len(images), chunk, progress, "embed images"))

    def classify(
        self, images: Sequence[ImageSource], labels: Sequence[str] | None = None, *, label_set: str | None = None,
        templates: Sequence[str] | None = None, top_k: int = 5, logits: bool = False, model: str | None = None,
        progress: bool | None = None,
    ) -> list[list[Label]]:
        """Zero-shot labels per image (best first), against ``labels`` or a named ``label_set``."""
        spec = classify_spec(labels, label_set, templates, top_k, logits)
        t = self.options.timeout_s

        def chunk(s: slice) -> list[list[Label]]:
            return self.transport.classify([load_image(x) for x in images[s]], spec, model, t)

        return [ranked for part in self._map(len(images), chunk, progress, "classify") for ranked in part]

    def similarity(self, left: Sequence[Input], right: Sequence[Input], *, model: str | None = None) -> Similarity:
        """Cosine similarities and probabilities between two input lists (``left`` sent in chunks)."""
        t = self.options.timeout_s
        parts = self._map(len(left), lambda s: self.transport.similarity(left[s], right, model, t), None, "similarity")
        return Similarity(parts[0].model, concat([p.cosine for p in parts]), concat([p.probabilities for p in parts]))

    def models(self) -> list[ModelInfo]:
        """The served models; the first is the default."""
        return call_with_retry(lambda: self.transport.models(self.options.timeout_s), self.options.retry)

    def close(self) -> None:
        """Close the connections."""
        self.transport.close()

    def __enter__(self) -> ClipClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
