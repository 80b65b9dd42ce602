"""The interface every runtime backend implements, and the checks on the batches it is given."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from service.errors import InvalidInput
from service.protocol.model_info import ModelInfo


@runtime_checkable
class Backend(Protocol):
    """A loaded model that turns preprocessed batches into L2-normalised float32 embeddings.

    Implementations are synchronous and called from a worker thread, one batch at a time per
    instance. They must be deterministic: the same input gives the same output.
    """

    info: ModelInfo

    def encode_images(self, pixels: np.ndarray) -> np.ndarray:
        """(N, 3, S, S) float32 normalised pixels -> (N, D) float32, L2-normalised rows."""
        ...

    def encode_texts(self, tokens: np.ndarray) -> np.ndarray:
        """(N, L) int64 token ids (L <= context_length, zero-padded) -> (N, D) float32, L2-normalised.

        L may be shorter than the context length: CLIP's causal mask makes running only as many
        positions as the longest text needs exact.
        """
        ...

    def warmup(self, batch_sizes: Sequence[int]) -> None:
        """Run each modality once at each batch size so the first requests are not slow."""
        ...

    def close(self) -> None:
        """Release resources (sessions, GPU memory)."""
        ...


def check_pixels(pixels: np.ndarray, image_size: int) -> np.ndarray:
    """A backend's image batch, validated: contiguous float32 (N, 3, S, S); InvalidInput otherwise."""
    if pixels.ndim != 4 or tuple(pixels.shape[1:]) != (3, image_size, image_size):
        raise InvalidInput(f"image batch must be (N, 3, {image_size}, {image_size}), got {tuple(pixels.shape)}")
    return np.ascontiguousarray(pixels, dtype=np.float32)


def check_tokens(tokens: np.ndarray, context_length: int) -> np.ndarray:
    """A backend's token batch, validated: contiguous int64 (N, L), 1 <= L <= context; InvalidInput otherwise."""
    if tokens.ndim != 2 or not 0 < tokens.shape[1] <= context_length:
        raise InvalidInput(
            f"token batch must be (N, L) with 1 <= L <= {context_length}, got {tuple(tokens.shape)}"
        )
    return np.ascontiguousarray(tokens, dtype=np.int64)
