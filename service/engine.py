"""The one engine core that REST and gRPC both call (interface; implementation in progress).

Validation, limits, the class-embedding cache and metrics live here once. Front ends translate
their wire format into these calls and map ``ClipServeError`` kinds to their own statuses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from service.config import Settings
from service.metrics import Metrics
from service.runtime.base import ModelInfo


@dataclass(frozen=True)
class TextItem:
    """A text to embed."""

    text: str


@dataclass(frozen=True)
class ImageItem:
    """An encoded image (JPEG, PNG, ...) to embed."""

    data: bytes


Item = TextItem | ImageItem


@dataclass(frozen=True)
class EmbedResult:
    """Embeddings in input order: row i for input i."""

    model: str
    embeddings: np.ndarray  # (N, D) float32, L2-normalised

    @property
    def dimension(self) -> int:
        """Embedding size."""
        return int(self.embeddings.shape[1])


@dataclass(frozen=True)
class LabelScore:
    """One label and its score (softmax probability, or logit on request)."""

    label: str
    score: float


@dataclass(frozen=True)
class ClassifyResult:
    """One ranked list of labels per image, in input order."""

    model: str
    results: list[list[LabelScore]]


@dataclass(frozen=True)
class SimilarityResult:
    """Cosine similarities and CLIP's softmax probabilities between two lists of items."""

    model: str
    cosine: np.ndarray  # (len(left), len(right))
    probabilities: np.ndarray  # softmax over right items of logit_scale * cosine, per left row


class Engine:
    """Validates requests, preprocesses off the event loop, batches, and runs the models."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        raise NotImplementedError

    async def start(self) -> None:
        """Load and warm up the configured models; afterwards ``ready`` is True."""
        raise NotImplementedError

    @property
    def ready(self) -> bool:
        """True when every model is loaded, warm and its workers answer, and not draining."""
        raise NotImplementedError

    def models(self) -> list[ModelInfo]:
        """The served models; the first is the default."""
        raise NotImplementedError

    async def embed(
        self, items: Sequence[Item], model: str | None = None, timeout_s: float | None = None,
        protocol: str = "rest",
    ) -> EmbedResult:
        """Embed texts and images (mixed allowed); rows in input order."""
        raise NotImplementedError

    async def classify(
        self,
        images: Sequence[bytes],
        *,
        labels: Sequence[str] | None = None,
        templates: Sequence[str] | None = None,
        label_set: str | None = None,
        top_k: int = 5,
        logits: bool = False,
        model: str | None = None,
        timeout_s: float | None = None,
        protocol: str = "rest",
    ) -> ClassifyResult:
        """Zero-shot classification of each image against labels (or a named label set)."""
        raise NotImplementedError

    async def similarity(
        self, left: Sequence[Item], right: Sequence[Item], model: str | None = None,
        timeout_s: float | None = None, protocol: str = "rest",
    ) -> SimilarityResult:
        """Cosine similarity matrix and softmax probabilities between two item lists."""
        raise NotImplementedError

    async def stop(self, drain_timeout_s: float = 0.0) -> None:
        """Turn unready, refuse new work, finish queued work (bounded), release the models."""
        raise NotImplementedError
