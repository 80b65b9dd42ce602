"""A model built the way the server builds it, for the measuring tools (``clipserve eval``, ``clipserve bench``).

``ServingModel.load`` resolves the model (``resolve_model``), exports it to ONNX on demand when its
backend is ``onnx`` (``ensure_onnx``), loads the backend through the server's factory
(``create_backend``) and pairs it with the serving tokenizer and image preprocessing. Encoding then
does what a served request does: decode + preprocess + stack images, tokenise + pad texts to the
batch's longest, and run the backend. Nothing here imports torch unless the backend chosen is torch
(or an on-demand export needs it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from service.clip.model_config import ModelConfig
from service.clip.preprocess import ImagePreprocessor
from service.clip.text_tokenizers import load_tokenizer
from service.clip.tokenizer import pad_batch
from service.runtime.base import Backend

if TYPE_CHECKING:
    from service.config import Settings


class ServingModel:
    """One loaded backend with the tokenizer and image preprocessing the server would give it."""

    def __init__(self, backend: Backend, config: ModelConfig, settings: Settings) -> None:
        """Wrap ``backend`` (loaded from ``config``); images are checked and decoded per ``settings``, as served."""
        self.backend = backend
        # A backend may complete the config from the weights (image size, mean/std...): use its copy.
        self.config: ModelConfig = getattr(backend, "config", config)
        self.tokenizer = load_tokenizer(self.config, settings.cache_dir)
        self.preprocessor = ImagePreprocessor.serving(self.config, settings)

    @classmethod
    def load(cls, name: str, settings: Settings) -> ServingModel:
        """Model ``name`` from ``settings.model_dir`` on the backend the server would pick for it.

        The backend is ``settings.backend`` when set, else the model's own (its config); ``settings``
        also gives the device, threads, ONNX options and cache folder. Raises NotFound (an unknown
        model, ONNX files that cannot be exported here) and what the backend's loading raises.
        """
        from service.clip.model_config import resolve_model
        from service.runtime.factory import create_backend
        from service.runtime.onnx_cache import ensure_onnx

        config = ensure_onnx(resolve_model(name, settings.model_dir), settings)
        return cls(create_backend(config, settings), config, settings)

    @property
    def name(self) -> str:
        """The model's name, as the server reports it."""
        return self.backend.info.name

    @property
    def backend_name(self) -> str:
        """The runtime that computes the embeddings: ``torch``, ``onnx`` (or ``fake``)."""
        return self.backend.info.backend

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """(N, D) L2-normalised embeddings of ``texts``, padded to the longest as the server batches them."""
        return self.backend.encode_texts(pad_batch([self.tokenizer.encode(t) for t in texts]))

    def encode_images(self, images: Sequence[bytes]) -> np.ndarray:
        """(N, D) L2-normalised embeddings of encoded image files (decoded and preprocessed as served)."""
        return self.backend.encode_images(self.preprocessor.stack([self.preprocessor(b) for b in images]))

    def close(self) -> None:
        """Release the backend (sessions, GPU memory)."""
        self.backend.close()
