"""A deterministic fake backend: embeddings from a hash of the input, no weights, no torch.

Identical inputs give identical rows (whatever the batch or its padding), rows are L2-normalised
float32 of a configurable size. API, gRPC and batcher tests run on it.

A model repository entry serves it with ``"backend": "fake"``; ``embed_dim`` sets the size (default
64) and ``logit_scale`` the multiplier (default 100). Test hooks travel in ``weights`` as
``key=value`` pairs separated by commas:

- ``delay_ms=N``: each batch takes N ms more (a slow model, for shutdown and timeout tests);
- ``fail_token=N``: a text batch containing token id N raises (a crashing batch).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import deque
from collections.abc import Callable, Sequence

import numpy as np

from service.clip.model_config import ModelConfig
from service.protocol.model_info import ModelInfo

DEFAULT_DIM = 64
DEFAULT_LOGIT_SCALE = 100.0


def _options(weights: str | None) -> dict[str, str]:
    """``"delay_ms=5,fail_token=7"`` -> ``{"delay_ms": "5", "fail_token": "7"}``."""
    pairs = [p.partition("=") for p in (weights or "").split(",") if p.strip()]
    return {k.strip(): v.strip() for k, _, v in pairs}


def _row(data: bytes, dim: int) -> np.ndarray:
    seed = int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")
    row = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return row / np.linalg.norm(row)


class FakeBackend:
    """Backend protocol implementation whose embeddings are a hash of the input."""

    def __init__(
        self,
        info: ModelInfo,
        delay_s: float = 0.0,
        fail_if: Callable[[str, np.ndarray], bool] | None = None,
    ) -> None:
        self.info = info
        self.delay_s = delay_s
        self.fail_if = fail_if  # (modality, batch) -> True makes the batch raise
        self.calls: deque[tuple[str, int]] = deque(maxlen=1024)  # (modality, batch size) of recent calls
        self.closed = False

    @classmethod
    def from_config(cls, config: ModelConfig, device: str = "cpu") -> FakeBackend:
        """A fake backend for a model repository entry (see the module docstring for options)."""
        opts = _options(config.weights)
        fingerprint = hashlib.sha256(config.model_dump_json(exclude={"path"}).encode()).hexdigest()[:16]
        info = ModelInfo(
            name=config.name,
            dimension=config.embed_dim or DEFAULT_DIM,
            image_size=config.image_size,
            context_length=config.context_length,
            logit_scale=config.logit_scale or DEFAULT_LOGIT_SCALE,
            backend="fake",
            precision=config.precision,
            device=device,
            fingerprint=fingerprint,
            extra={"options": json.dumps(opts)} if opts else {},
            scoring=config.scoring,
            logit_bias=config.logit_bias,
        )
        fail_if = None
        if "fail_token" in opts:
            token = int(opts["fail_token"])
            fail_if = lambda modality, batch: modality == "text" and bool((batch == token).any())  # noqa: E731
        return cls(info, delay_s=float(opts.get("delay_ms", 0)) / 1000, fail_if=fail_if)

    def _encode(self, modality: str, batch: np.ndarray, rows: Sequence[bytes]) -> np.ndarray:
        self.calls.append((modality, len(rows)))
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.fail_if is not None and self.fail_if(modality, batch):
            raise RuntimeError(f"fake backend: {modality} batch failed on its marker")
        out = np.empty((len(rows), self.info.dimension), dtype=np.float32)
        for i, data in enumerate(rows):
            out[i] = _row(modality.encode() + data, self.info.dimension)
        return out

    def encode_images(self, pixels: np.ndarray) -> np.ndarray:
        """(N, 3, S, S) float32 -> (N, D): a hash of each image's pixels."""
        pixels = np.ascontiguousarray(pixels, dtype=np.float32)
        return self._encode("image", pixels, [p.tobytes() for p in pixels])

    def encode_texts(self, tokens: np.ndarray) -> np.ndarray:
        """(N, L) int64 -> (N, D): a hash of each row's tokens without the zero padding."""
        tokens = np.asarray(tokens, dtype=np.int64)
        rows = [np.trim_zeros(t, "b").tobytes() for t in tokens]
        return self._encode("text", tokens, rows)

    def warmup(self, batch_sizes: Sequence[int]) -> None:
        """Nothing to warm; run each size once so warm-up paths are exercised."""
        size = self.info.image_size
        for n in batch_sizes:
            self.encode_images(np.zeros((n, 3, size, size), dtype=np.float32))
            self.encode_texts(np.ones((n, 2), dtype=np.int64))

    def close(self) -> None:
        """Nothing to release."""
        self.closed = True
