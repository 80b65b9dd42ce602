"""What the client sends and returns, and the one-call transports it runs over (REST or gRPC).

An input is a ``str`` (a text), ``bytes`` (an encoded image) or an ``ImageUrl`` (an image's http(s)
URL, sent as the URL: the server fetches it). A transport makes one call with no
retry and no chunking; ``ClipClient``/``AsyncClipClient`` add those on top.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from service.protocol.image_url import ImageUrl
from service.protocol.model_info import LabelScore, ModelInfo

Input = str | bytes | ImageUrl  # a text, an encoded image (JPEG, PNG, ...), or an image's URL
Image = bytes | ImageUrl  # an image to classify: encoded, or its URL


@dataclass(frozen=True)
class Similarity:
    """Cosine similarities (len(left), len(right)) and the model's probabilities: softmax per left row (CLIP),
    or a sigmoid per entry (SigLIP; see ``ModelInfo.scoring``)."""

    model: str
    cosine: np.ndarray
    probabilities: np.ndarray


@dataclass(frozen=True)
class ClassifySpec:
    """The label side of a classify call: labels or a named label set, and how to score."""

    labels: tuple[str, ...] = ()
    label_set: str | None = None
    templates: tuple[str, ...] = ()
    top_k: int = 5
    logits: bool = False


class Transport(Protocol):
    """One blocking call per method, to one server."""

    def embed(self, inputs: Sequence[Input], model: str | None, timeout_s: float | None) -> np.ndarray:
        """(len(inputs), D) float32 embeddings, row i for input i."""
        ...

    def classify(
        self, images: Sequence[Image], spec: ClassifySpec, model: str | None, timeout_s: float | None
    ) -> list[list[LabelScore]]:
        """Ranked labels per image."""
        ...

    def similarity(
        self, left: Sequence[Input], right: Sequence[Input], model: str | None, timeout_s: float | None
    ) -> Similarity:
        """Similarity between two input lists."""
        ...

    def models(self, timeout_s: float | None) -> list[ModelInfo]:
        """The served models, default first."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


class AsyncTransport(Protocol):
    """``Transport`` with coroutines."""

    async def embed(self, inputs: Sequence[Input], model: str | None, timeout_s: float | None) -> np.ndarray:
        """(len(inputs), D) float32 embeddings, row i for input i."""
        ...

    async def classify(
        self, images: Sequence[Image], spec: ClassifySpec, model: str | None, timeout_s: float | None
    ) -> list[list[LabelScore]]:
        """Ranked labels per image."""
        ...

    async def similarity(
        self, left: Sequence[Input], right: Sequence[Input], model: str | None, timeout_s: float | None
    ) -> Similarity:
        """Similarity between two input lists."""
        ...

    async def models(self, timeout_s: float | None) -> list[ModelInfo]:
        """The served models, default first."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...
