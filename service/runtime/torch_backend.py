"""The PyTorch backend: an open_clip model (loaded by ``service.clip.loading``) behind ``Backend``.

fp32 on CPU; fp16 or bf16 on GPU cast the whole model (inputs follow, outputs are normalised in
fp32). Text batches run only the positions their longest text needs (``encode_text_trimmed``).
This is the one runtime module that imports torch at the top.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from service.clip.loading import fingerprint, load_clip
from service.clip.model_config import ModelConfig
from service.clip.reparam import reparameterizable
from service.clip.text import can_trim, encode_text_trimmed
from service.protocol.model_info import ModelInfo
from service.runtime.base import check_pixels, check_tokens

log = logging.getLogger(__name__)


class TorchBackend:
    """A loaded open_clip CLIP model that embeds preprocessed image and token batches."""

    def __init__(
        self,
        config: ModelConfig,
        device: str = "cpu",
        precision: str | None = None,
        threads: int = 0,
        cache_dir: Path | str | None = None,
    ) -> None:
        """Load ``config``'s model on ``device``; ``threads`` > 0 sets torch's intra-op threads."""
        if threads > 0:
            torch.set_num_threads(threads)
        if device.startswith("cuda"):
            torch.backends.cudnn.benchmark = False  # same input, same kernels, same output
            torch.backends.cudnn.deterministic = True
        self._model: Any
        self._model, self.config = load_clip(config, device=device, precision=precision, cache_dir=cache_dir)
        self._device = torch.device(device)
        self._dtype = next(self._model.parameters()).dtype
        assert self.config.embed_dim is not None and self.config.logit_scale is not None
        self.info = ModelInfo(
            name=self.config.name,
            dimension=self.config.embed_dim,
            image_size=self.config.image_size,
            context_length=self.config.context_length,
            logit_scale=self.config.logit_scale,
            backend="torch",
            precision=self.config.precision,
            device=str(self._device),
            fingerprint=fingerprint(self.config, self._model.state_dict()),
            extra={
                "architecture": self.config.architecture,
                "weights": self.config.weights or f"random (seed {self.config.seed})",
                "text_trimming": "on" if can_trim(self._model) else "off",
                "reparameterized": "yes" if reparameterizable(self._model) else "no (nothing to fold)",
            },
            scoring=self.config.scoring,
            logit_bias=self.config.logit_bias,
        )
        log.info("loaded %s (%s) on %s in %s", self.info.name, self.info.extra["architecture"], device,
                 self.info.precision)

    @property
    def model(self) -> Any:
        """The underlying open_clip model (eval mode, no gradients)."""
        return self._model

    def encode_images(self, pixels: np.ndarray) -> np.ndarray:
        """(N, 3, S, S) float32 normalised pixels -> (N, D) float32, L2-normalised rows."""
        pixels = check_pixels(pixels, self.info.image_size)
        if pixels.shape[0] == 0:
            return np.zeros((0, self.info.dimension), dtype=np.float32)
        batch = torch.from_numpy(pixels)
        with torch.inference_mode():
            features = self._model.encode_image(batch.to(self._device, self._dtype))
            return _normalised(features)

    def encode_texts(self, tokens: np.ndarray) -> np.ndarray:
        """(N, L) int64 zero-padded token ids, L <= context length -> (N, D) float32, L2-normalised."""
        tokens = check_tokens(tokens, self.info.context_length)
        if tokens.shape[0] == 0:
            return np.zeros((0, self.info.dimension), dtype=np.float32)
        batch = torch.from_numpy(tokens)
        with torch.inference_mode():
            return _normalised(encode_text_trimmed(self._model, batch.to(self._device)))

    def warmup(self, batch_sizes: Sequence[int]) -> None:
        """Run both towers once per batch size (texts at the full context length, the worst case)."""
        size, context = self.info.image_size, self.info.context_length
        text = getattr(self._model, "text", self._model)  # CustomTextCLIP (SigLIP, MobileCLIP) keeps it there
        eot = int(getattr(text, "vocab_size", 2)) - 1  # the largest id, where argmax pooling reads
        for n in batch_sizes:
            self.encode_images(np.zeros((n, 3, size, size), dtype=np.float32))
            tokens = np.ones((n, context), dtype=np.int64)
            tokens[:, -1] = eot
            self.encode_texts(tokens)

    def close(self) -> None:
        """Drop the model and give its GPU memory back."""
        self._model = None
        if self._device.type == "cuda":
            torch.cuda.empty_cache()


def _normalised(features: torch.Tensor) -> np.ndarray:
    """L2-normalise in fp32 and return a CPU numpy array."""
    out: np.ndarray = F.normalize(features.float(), dim=-1).cpu().numpy()
    return out
