"""What the engine takes and returns: items to embed and the results of each call.

``LabelScore`` is the protocol's (the client returns the same type).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.protocol.image_url import ImageUrl  # an image by URL: the engine fetches it (service.engine.fetch)
from service.protocol.model_info import LabelScore


@dataclass(frozen=True)
class TextItem:
    """A text to embed."""

    text: str


@dataclass(frozen=True)
class ImageItem:
    """An encoded image (JPEG, PNG, ...) to embed."""

    data: bytes


Item = TextItem | ImageItem | ImageUrl
Image = bytes | ImageUrl  # an image to classify: its encoded bytes, or its URL


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
class ClassifyResult:
    """One ranked list of labels per image, in input order."""

    model: str
    results: list[list[LabelScore]]


@dataclass(frozen=True)
class SimilarityResult:
    """Cosine similarities and the model's probabilities (softmax per row, or sigmoid) between two lists of items."""

    model: str
    cosine: np.ndarray  # (len(left), len(right))
    probabilities: np.ndarray  # softmax over right items of logit_scale * cosine per left row; SigLIP: sigmoid
