"""Backend selection: torch, onnx or fake, by settings (override) or the model's config (default: onnx).

Each backend module is imported only when chosen, so serving ONNX (or the fake) never imports torch.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING

from service.clip.model_config import ModelConfig
from service.runtime.base import Backend

if TYPE_CHECKING:
    from service.config import Settings


def backend_name(config: ModelConfig, settings: Settings) -> str:
    """The backend that serves ``config``: the settings' override, else the model's own (``auto``: onnx,
    which ``service.runtime.onnx_cache.choose_backend`` turns into torch where the export fails)."""
    if config.backend == "fake":  # a test model; an override to torch/onnx would need real weights
        return "fake"
    name = settings.backend or config.backend
    return "onnx" if name == "auto" else name


def worker_device(device: str, index: int, workers: int) -> str:
    """The device of worker ``index``: ``cuda`` with several workers spreads them over cuda:0..N-1."""
    if device == "cuda" and workers > 1:
        return f"cuda:{index}"
    return device


def create_backend(config: ModelConfig, settings: Settings, index: int = 0) -> Backend:
    """Load one backend instance (worker ``index``) for ``config``."""
    name = backend_name(config, settings)
    device = worker_device(settings.device, index, settings.workers_per_model)
    if name == "fake":
        from service.runtime.fake import FakeBackend

        return FakeBackend.from_config(config, device=device)
    if name == "onnx":
        from service.runtime.onnx_backend import OnnxBackend

        return OnnxBackend.from_settings(config, settings, device=device)  # type: ignore[no-any-return]
    from service.runtime.torch_backend import TorchBackend

    return TorchBackend(
        config, device=device, precision=settings.precision, threads=settings.inference_threads,
        cache_dir=settings.cache_dir,
    )


def backend_loaders(config: ModelConfig, settings: Settings) -> list[Callable[[], Backend]]:
    """One loader per worker (``settings.workers_per_model``); each loads that worker's backend when called.

    The engine calls each loader on the thread that will run the backend (``BackendThread``).
    """
    return [functools.partial(create_backend, config, settings, i) for i in range(settings.workers_per_model)]
