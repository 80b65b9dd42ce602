"""Small pieces the engine is built from: task helpers, softmax, and the class-embedding cache."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from service.clip.zeroshot import CacheKey, ClassEmbeddingCache, class_embeddings, get_label_set, resolve_templates
from service.errors import DeadlineExceeded, InvalidInput, Overloaded
from service.metrics import Metrics

if TYPE_CHECKING:
    from service.config import Settings
    from service.served_model import ServedModel

log = logging.getLogger(__name__)


def remaining(deadline: float) -> float:
    """Seconds left until a ``time.monotonic()`` deadline (never negative)."""
    return max(0.0, deadline - time.monotonic())


def softmax(x: np.ndarray) -> np.ndarray:
    """Row-wise softmax, stable for large logits."""
    e = np.exp(x - x.max(axis=1, keepdims=True))
    out: np.ndarray = e / e.sum(axis=1, keepdims=True)
    return out


async def gather_or_cancel(*aws: Awaitable[Any]) -> list[Any]:
    """Run awaitables concurrently; on the first error cancel the others and raise it."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    except asyncio.CancelledError:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    if pending:
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
    return [task.result() for task in tasks]


class ClassEmbeddings:
    """Zero-shot class-embedding matrices, computed through the text batcher and cached (LRU).

    Keyed by model fingerprint, labels and templates, so classifying again with the same labels
    encodes no text. A computation runs as a task of its own: a request whose deadline passes
    leaves it running (a later request finds it cached), and concurrent requests for the same
    labels share it.
    """

    def __init__(self, capacity: int, chunk: int, metrics: Metrics) -> None:
        self._cache = ClassEmbeddingCache(capacity)
        self._chunk = chunk  # prompts per batcher submit: one batch, so other requests interleave
        self._metrics = metrics
        self._pending: dict[CacheKey, asyncio.Task[np.ndarray]] = {}

    @staticmethod
    def resolve(
        labels: Sequence[str] | None, templates: Sequence[str] | None, label_set: str | None, settings: Settings
    ) -> tuple[list[str], list[str]]:
        """The labels and templates to use, checked against the limits (or a named label set's)."""
        if label_set and labels:
            raise InvalidInput("give either labels or label_set, not both")
        if templates:
            _check_texts(templates, "templates", settings)
        if label_set:
            found = get_label_set(label_set)
            return list(found.classes), list(resolve_templates(templates or found.templates))
        if not labels:
            raise InvalidInput("labels: empty; give labels or a label_set")
        _check_texts(labels, "labels", settings)
        return list(labels), list(resolve_templates(templates))

    async def get(self, served: ServedModel, names: list[str], templates: list[str], deadline: float) -> np.ndarray:
        """The (labels, D) class-embedding matrix, from the cache or computed (waiting until ``deadline``)."""
        key = ClassEmbeddingCache.key(served.info.fingerprint or served.name, names, templates)
        found = self._cache.get(key)
        task = self._pending.get(key)
        if found is not None or task is not None:
            self._metrics.cache_hits.labels(model=served.name).inc()
            if found is not None:
                return found
        else:
            self._metrics.cache_misses.labels(model=served.name).inc()
            task = asyncio.create_task(self._compute(served, names, templates))
            self._pending[key] = task
            task.add_done_callback(lambda t: self._finished(key, t))
        assert task is not None
        try:
            return await asyncio.wait_for(asyncio.shield(task), remaining(deadline))
        except asyncio.TimeoutError:
            raise DeadlineExceeded(
                f"request timed out while encoding {len(names)} labels x {len(templates)} templates; "
                "the encoding goes on and a later request with the same labels will use it"
            ) from None

    def _finished(self, key: CacheKey, task: asyncio.Task[np.ndarray]) -> None:
        self._pending.pop(key, None)
        if not task.cancelled() and task.exception() is None:
            self._cache.put(key, task.result())

    async def _compute(self, served: ServedModel, names: list[str], templates: list[str]) -> np.ndarray:
        """``zeroshot.class_embeddings`` in a thread; its text chunks go through the batcher."""
        loop = asyncio.get_running_loop()

        def encode(texts: list[str]) -> np.ndarray:  # runs in the thread: tokenize here, compute on the loop
            tokens = [served.tokenizer.encode(text) for text in texts]
            return asyncio.run_coroutine_threadsafe(_submit_patiently(served, tokens), loop).result()

        return await asyncio.to_thread(class_embeddings, names, templates, encode, self._chunk)

    async def cancel_pending(self) -> None:
        """Stop computations that no request waits for any more (shutdown)."""
        tasks = list(self._pending.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _submit_patiently(served: ServedModel, tokens: list[list[int]]) -> np.ndarray:
    """Submit to the text batcher, waiting and retrying while its queue is full."""
    while True:
        try:
            return await served.texts.submit(tokens)
        except Overloaded as exc:
            await asyncio.sleep(exc.retry_after_s or 0.1)


def _check_texts(texts: Sequence[str], field: str, settings: Settings) -> None:
    if len(texts) > settings.max_labels:
        raise InvalidInput(f"{field}: {len(texts)} given; the limit is {settings.max_labels} (max_labels)")
    for i, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise InvalidInput(f"{field}[{i}]: must be a non-empty string")
        if len(text) > settings.max_text_chars:
            raise InvalidInput(
                f"{field}[{i}]: {len(text)} characters; the limit is {settings.max_text_chars} (max_text_chars)"
            )
