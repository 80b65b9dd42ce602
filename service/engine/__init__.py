"""The one core that REST and gRPC call: validation, limits, zero-shot class embeddings, metrics.

``Engine`` (core.py) serves the configured models; ``ServedModel`` (served_model.py) is one model's
backend threads and batchers; ``ClassEmbeddings`` (zeroshot.py) computes and caches class matrices.
"""

from service.engine.core import Engine
from service.engine.types import (
    ClassifyResult,
    EmbedResult,
    Image,
    ImageItem,
    ImageUrl,
    Item,
    LabelScore,
    SimilarityResult,
    TextItem,
)

__all__ = [
    "ClassifyResult", "EmbedResult", "Engine", "Image", "ImageItem", "ImageUrl", "Item", "LabelScore",
    "SimilarityResult", "TextItem",
]
