"""One served model: its backends (one per worker), tokenizer, image preprocessor and two batchers.

The engine keeps one ``ServedModel`` per configured model; this module knows how a model's items
become batches (images: stack pixel arrays; texts: pad token lists to the longest) and how the model
is warmed up before the server reports ready.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np

from service.batching.batcher import Batcher, BatcherConfig, ComputeFn
from service.clip.model_config import ModelConfig
from service.clip.preprocess import ImagePreprocessor
from service.clip.text_tokenizers import TextTokenizer, load_tokenizer
from service.clip.tokenizer import pad_batch
from service.config import Settings
from service.metrics import Metrics
from service.protocol.model_info import ModelInfo
from service.runtime.base import Backend

log = logging.getLogger(__name__)
T = TypeVar("T")


def batch_buckets(max_batch_size: int) -> list[int]:
    """Warm-up batch sizes: powers of two up to ``max_batch_size``, and ``max_batch_size`` itself."""
    sizes = [1 << i for i in range(max_batch_size.bit_length()) if 1 << i <= max_batch_size]
    return sizes if sizes[-1] == max_batch_size else [*sizes, max_batch_size]


class BackendThread:
    """Loads one backend on a dedicated thread and runs every later call into it there too.

    Hot path, measured (``clipserve bench``, ViT-B-32 on 2 cores): torch keeps an OpenMP thread team
    per calling thread, so loading, warm-up, image batches and text batches calling from different
    threads made several teams compete for the cores, and batch-1 inference took ~220 ms in the
    server against ~145 ms in-process. One thread per backend keeps one team.
    """

    def __init__(self, load: Callable[[], Backend], name: str) -> None:
        """Start the thread and run ``load`` on it (raises what ``load`` raises)."""
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        try:
            self.backend: Backend = self.call(load)
        except BaseException:
            self._thread.shutdown(wait=False)
            raise

    def call(self, fn: Callable[..., T], *args: object) -> T:
        """Run ``fn(*args)`` on the backend's thread and wait for its result."""
        return self._thread.submit(fn, *args).result()

    def image_worker(self, preprocessor: ImagePreprocessor) -> ComputeFn:
        """Compute function for the image batcher: (3, S, S) arrays -> one batch -> embeddings."""
        return lambda payloads: self.call(self.backend.encode_images, preprocessor.stack(payloads))

    def text_worker(self) -> ComputeFn:
        """Compute function for the text batcher: id lists -> (N, longest) int64 -> embeddings."""
        return lambda payloads: self.call(self.backend.encode_texts, pad_batch(payloads))

    def close(self) -> None:
        """Release the backend (on its thread), then the thread."""
        try:
            self.call(self.backend.close)
        finally:
            self._thread.shutdown(wait=False)


def start_backend_threads(loaders: Sequence[Callable[[], Backend]], name: str) -> list[BackendThread]:
    """One ``BackendThread`` per loader (blocking; call in a thread). If one fails to load, those
    already started are closed before the error propagates, so no backend is left running."""
    threads: list[BackendThread] = []
    try:
        for i, load in enumerate(loaders):
            threads.append(BackendThread(load, f"{name}-{i}"))
    except BaseException:
        close_backend_threads(threads, name)
        raise
    return threads


def close_backend_threads(threads: Sequence[BackendThread], name: str) -> None:
    """Close each backend thread; one that fails to close is logged and does not stop the others."""
    for i, thread in enumerate(threads):
        try:
            thread.close()
        except Exception:
            log.exception("closing backend %d of model %r failed", i, name)


class ServedModel:
    """A loaded model and everything needed to feed it."""

    def __init__(self, config: ModelConfig, threads: Sequence[BackendThread], settings: Settings, metrics: Metrics,
                 backend_reason: str = ""):
        """``backend_reason`` (why this backend serves it, ``choose_backend``'s) goes into ``info``."""
        if not threads:
            raise ValueError("a served model needs at least one backend")
        self._threads = list(threads)
        self.backends = [thread.backend for thread in self._threads]
        # A backend may complete the config from the weights (image size, mean/std...): use its copy.
        self.config: ModelConfig = getattr(self.backends[0], "config", config)
        self.info: ModelInfo = dataclasses.replace(self.backends[0].info, backend_reason=backend_reason)
        self.name = self.info.name
        self.tokenizer: TextTokenizer = load_tokenizer(self.config, settings.cache_dir)
        self.preprocessor = ImagePreprocessor.serving(self.config, settings)
        knobs = BatcherConfig(
            settings.max_batch_size, settings.max_delay_ms, settings.queue_size, settings.adaptive_batching
        )
        self.images: Batcher[np.ndarray] = Batcher(
            self.name, "image", [t.image_worker(self.preprocessor) for t in self._threads], knobs, metrics
        )
        self.texts: Batcher[list[int]] = Batcher(
            self.name, "text", [t.text_worker() for t in self._threads], knobs, metrics
        )
        self._m_preprocess = metrics.preprocess.labels(model=self.name, modality="image")
        self._max_batch_size = settings.max_batch_size

    def preprocess(self, data: bytes) -> np.ndarray:
        """Decode and preprocess one encoded image (runs in the engine's thread pool), timed."""
        begin = time.perf_counter()
        try:
            return self.preprocessor(data)
        finally:
            self._m_preprocess.observe(time.perf_counter() - begin)

    def warmup(self) -> float:
        """Run every backend at each batch-size bucket (blocking; call in a thread). Returns seconds."""
        begin = time.perf_counter()
        buckets = batch_buckets(self._max_batch_size)
        for thread in self._threads:
            thread.call(thread.backend.warmup, buckets)
        return time.perf_counter() - begin

    async def start(self) -> None:
        """Start both batchers and check that each answers one item."""
        await self.images.start()
        await self.texts.start()
        size = self.info.image_size
        image_rows = await self.images.submit([np.zeros((3, size, size), dtype=np.float32)])
        text_rows = await self.texts.submit([self.tokenizer.encode("")])
        for modality, rows in (("image", image_rows), ("text", text_rows)):
            if rows.shape != (1, self.info.dimension):
                raise RuntimeError(f"model {self.name!r}: {modality} worker answered shape {rows.shape}")

    async def stop(self, drain_timeout_s: float) -> None:
        """Finish queued work (bounded), stop the batchers and release the backends."""
        await asyncio.gather(self.images.stop(drain_timeout_s), self.texts.stop(drain_timeout_s))
        close_backend_threads(self._threads, self.name)
