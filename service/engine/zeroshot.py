"""Zero-shot class embeddings for the engine: the labels and templates checked, then computed and cached.

A class matrix is CLIP's prompt ensemble (``service.clip.zeroshot``), encoded through the model's
text batcher. Work is bounded on every side:

- one request asks for at most ``max_prompts`` prompts (labels x templates) of at most
  ``max_prompt_chars`` characters together (413 otherwise, naming the setting);
- one computation per distinct label set at a time, shared by every request that waits for it and
  cancelled as soon as none waits any longer (a client gone, a deadline passed);
- at most ``max_class_jobs`` computations run at once; others wait for a slot within their deadline;
- prompts are made, tokenized and encoded a batch at a time and summed per class as they come, so
  memory holds one batch of prompts, never the whole list.

Finished matrices are kept in an LRU of ``class_cache_size`` entries keyed by model fingerprint,
labels and templates.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from service.clip.zeroshot import PLACEHOLDER, get_label_set, normalise, resolve_templates
from service.engine.tasks import remaining
from service.errors import DeadlineExceeded, InvalidInput, LimitExceeded, Overloaded
from service.metrics import Metrics

if TYPE_CHECKING:
    from service.clip.text_tokenizers import TextTokenizer
    from service.config import Settings
    from service.engine.served_model import ServedModel

log = logging.getLogger(__name__)
CacheKey = tuple[str, tuple[str, ...], tuple[str, ...]]


@dataclass(eq=False)
class _Job:
    """One class-matrix computation and how many requests wait for it."""

    task: asyncio.Task[np.ndarray]
    waiters: int = 0


class ClassEmbeddings:
    """Class-embedding matrices for zero-shot classification: resolved, bounded, shared and cached."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self._settings = settings
        self._metrics = metrics
        self._chunk = settings.max_batch_size  # prompts per batcher submit: one batch, so others interleave
        self._cache: OrderedDict[CacheKey, np.ndarray] = OrderedDict()
        self._jobs: dict[CacheKey, _Job] = {}
        self._slots = asyncio.Semaphore(settings.max_class_jobs)

    def resolve(
        self, labels: Sequence[str] | None, templates: Sequence[str] | None, label_set: str | None
    ) -> tuple[list[str], list[str]]:
        """The labels and templates to use, checked against the limits (a named label set's included)."""
        if label_set and labels:
            raise InvalidInput("give either labels or label_set, not both")
        if templates:
            self._check_texts(templates, "templates")
        if label_set:
            found = get_label_set(label_set)
            names, chosen = list(found.classes), list(resolve_templates(templates or found.templates))
        elif not labels:
            raise InvalidInput("labels: empty; give labels or a label_set")
        else:
            self._check_texts(labels, "labels")
            names, chosen = list(labels), list(resolve_templates(templates))
        self._check_prompts(names, chosen)
        return names, chosen

    @property
    def pending(self) -> list[asyncio.Task[np.ndarray]]:
        """The class-matrix computations in progress (or waiting for a slot)."""
        return [job.task for job in self._jobs.values()]

    async def get(self, served: ServedModel, names: list[str], templates: list[str], deadline: float) -> np.ndarray:
        """The (labels, D) class matrix, from the cache or computed, waiting at most until ``deadline``."""
        key: CacheKey = (served.info.fingerprint or served.name, tuple(names), tuple(templates))
        found = self._cache.get(key)
        if found is not None:
            self._cache.move_to_end(key)
            self._metrics.cache_hits.labels(model=served.name).inc()
            return found
        job = self._jobs.get(key)
        if job is None:
            self._metrics.cache_misses.labels(model=served.name).inc()
            job = _Job(asyncio.create_task(self._compute(served, names, templates)))
            self._jobs[key] = job
            job.task.add_done_callback(lambda task: self._finished(key, task))
        else:
            self._metrics.cache_hits.labels(model=served.name).inc()
        job.waiters += 1
        try:
            return await asyncio.wait_for(asyncio.shield(job.task), remaining(deadline))
        except asyncio.TimeoutError:
            raise DeadlineExceeded(
                f"request timed out while encoding {len(names)} labels x {len(templates)} templates"
            ) from None
        finally:
            job.waiters -= 1
            if job.waiters == 0 and not job.task.done():
                log.info("class embeddings for %d labels cancelled: no request waits for them", len(names))
                job.task.cancel()

    def _finished(self, key: CacheKey, task: asyncio.Task[np.ndarray]) -> None:
        self._jobs.pop(key, None)
        if task.cancelled() or task.exception() is not None or self._settings.class_cache_size <= 0:
            return
        stored = task.result()
        stored.setflags(write=False)
        self._cache[key] = stored
        while len(self._cache) > self._settings.class_cache_size:
            self._cache.popitem(last=False)

    async def _compute(self, served: ServedModel, names: list[str], templates: list[str]) -> np.ndarray:
        """Encode every prompt a batch at a time and average them per class (CLIP's prompt ensemble)."""
        async with self._slots:
            sums = np.zeros((len(names), served.info.dimension), dtype=np.float64)
            for label_at, texts in prompt_batches(names, templates, self._chunk):
                tokens = await asyncio.to_thread(_tokenize, served.tokenizer, texts)
                rows = normalise(await _submit_patiently(served, tokens))
                np.add.at(sums, label_at, rows)
            return normalise(sums / len(templates))

    async def cancel_pending(self) -> None:
        """Stop every computation still running (shutdown)."""
        tasks = [job.task for job in self._jobs.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _check_texts(self, texts: Sequence[str], field_name: str) -> None:
        limit = self._settings.max_labels
        if len(texts) > limit:
            raise InvalidInput(f"{field_name}: {len(texts)} given; the limit is {limit} (max_labels)")
        for i, text in enumerate(texts):
            if not isinstance(text, str) or not text.strip():
                raise InvalidInput(f"{field_name}[{i}]: must be a non-empty string")
            if len(text) > self._settings.max_text_chars:
                raise InvalidInput(
                    f"{field_name}[{i}]: {len(text)} characters; the limit is "
                    f"{self._settings.max_text_chars} (max_text_chars)"
                )

    def _check_prompts(self, names: Sequence[str], templates: Sequence[str]) -> None:
        count, limit = len(names) * len(templates), self._settings.max_prompts
        if count > limit:
            raise LimitExceeded(
                f"{len(names)} labels x {len(templates)} templates = {count} prompts; "
                f"the limit is {limit} prompts per request (max_prompts)"
            )
        chars, char_limit = prompt_chars(names, templates), self._settings.max_prompt_chars
        if chars > char_limit:
            raise LimitExceeded(
                f"labels x templates make {chars} characters of prompts; the limit is {char_limit} (max_prompt_chars)"
            )


def prompt_chars(labels: Sequence[str], templates: Sequence[str]) -> int:
    """The characters of every label put into every template, counted without building the prompts."""
    label_chars = sum(len(label) for label in labels)
    total = 0
    for template in templates:
        slots = template.count(PLACEHOLDER)
        total += len(labels) * (len(template) - slots * len(PLACEHOLDER)) + slots * label_chars
    return total


def prompt_batches(labels: Sequence[str], templates: Sequence[str], size: int) -> Iterator[tuple[list[int], list[str]]]:
    """Label-major prompts in batches of at most ``size``: (the label index of each prompt, the prompts)."""
    label_at: list[int] = []
    texts: list[str] = []
    for i, label in enumerate(labels):
        for template in templates:
            label_at.append(i)
            texts.append(template.replace(PLACEHOLDER, label))
            if len(texts) == size:
                yield label_at, texts
                label_at, texts = [], []
    if texts:
        yield label_at, texts


def _tokenize(tokenizer: TextTokenizer, texts: list[str]) -> list[list[int]]:
    return [tokenizer.encode(text) for text in texts]


async def _submit_patiently(served: ServedModel, tokens: list[list[int]]) -> np.ndarray:
    """Submit to the text batcher, waiting and retrying while its queue is full."""
    while True:
        try:
            return await served.texts.submit(tokens)
        except Overloaded as exc:
            await asyncio.sleep(exc.retry_after_s or 0.1)
