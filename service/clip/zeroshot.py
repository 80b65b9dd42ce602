"""Zero-shot classification with CLIP, in numpy: class embeddings from prompts, ranking, and a cache.

A class embedding is CLIP's prompt ensemble: each label is put into every template, the texts are
embedded and L2-normalised, averaged over templates, and normalised again. An image's scores are
``softmax(logit_scale * cosine)`` over the classes. Labels given without templates use
``DEFAULT_TEMPLATES`` (the single prompt ``"a photo of a {}."`` of the CLIP paper).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence

import numpy as np

from service.clip.labelsets import LabelSet, get_label_set, label_set_names
from service.errors import InvalidInput

__all__ = [
    "DEFAULT_TEMPLATES", "ClassEmbeddingCache", "LabelSet", "class_embeddings", "classify", "get_label_set",
    "label_set_names", "prompts", "resolve_templates",
]

DEFAULT_TEMPLATES: tuple[str, ...] = ("a photo of a {}.",)
PLACEHOLDER = "{}"
EncodeTexts = Callable[[list[str]], np.ndarray]
CacheKey = tuple[str, tuple[str, ...], tuple[str, ...]]


def resolve_templates(templates: Sequence[str] | None) -> tuple[str, ...]:
    """The templates to use: the given ones (each must contain ``{}``) or ``DEFAULT_TEMPLATES``."""
    if not templates:
        return DEFAULT_TEMPLATES
    for template in templates:
        if PLACEHOLDER not in template:
            raise InvalidInput(f"template {template!r} has no '{{}}' where the label goes")
    return tuple(templates)


def prompts(labels: Sequence[str], templates: Sequence[str]) -> list[str]:
    """Every label in every template, label-major: ``[t0(l0), t1(l0), ..., t0(l1), ...]``.

    Each ``{}`` of a template is replaced by the label (plain replacement: other braces are kept).
    """
    return [template.replace(PLACEHOLDER, label) for label in labels for template in templates]


def _normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.asarray(x / np.maximum(norms, 1e-12), dtype=np.float32)


def class_embeddings(
    labels: Sequence[str],
    templates: Sequence[str] | None,
    encode_texts: EncodeTexts,
    chunk_size: int = 4096,
) -> np.ndarray:
    """(C, D) float32 class embeddings: normalise(mean over templates of normalise(embed(prompt))).

    ``encode_texts`` embeds a list of texts into (N, D) rows; it is called on at most ``chunk_size``
    prompts at a time (ImageNet's 1000 classes x 80 templates are 80,000 prompts).
    """
    if not labels:
        raise InvalidInput("no labels to classify against")
    chosen = resolve_templates(templates)
    texts = prompts(labels, chosen)
    parts = [np.asarray(encode_texts(texts[i : i + chunk_size]), np.float32) for i in range(0, len(texts), chunk_size)]
    embedded = _normalise(np.concatenate(parts))
    per_class = embedded.reshape(len(labels), len(chosen), -1).mean(axis=1)
    return _normalise(per_class)


def classify(
    image_emb: np.ndarray, class_emb: np.ndarray, logit_scale: float, top_k: int = 5, logits: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Rank classes per image: (N, k) class indices, best first, and their scores.

    Scores are softmax probabilities over all C classes of ``logit_scale * cosine`` (or the logits
    themselves with ``logits=True``). ``k = min(top_k, C)``; ties keep the lower class index first.
    """
    if top_k < 1:
        raise InvalidInput(f"top_k must be at least 1, got {top_k}")
    scores = logit_scale * (np.asarray(image_emb, np.float32) @ np.asarray(class_emb, np.float32).T)
    if not logits:
        shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
        scores = shifted / shifted.sum(axis=1, keepdims=True)
    k = min(top_k, scores.shape[1])
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(scores, order, axis=1).astype(np.float32)


class ClassEmbeddingCache:
    """A thread-safe LRU of class-embedding matrices keyed by (model fingerprint, labels, templates).

    ``max_size`` 0 turns it off. Stored arrays are read-only. Two threads missing the same key at
    once both compute it (the second store wins); nothing waits on another thread's compute.
    """

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self.hits = 0
        self.misses = 0
        self._items: OrderedDict[CacheKey, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key(fingerprint: str, labels: Sequence[str], templates: Sequence[str] | None) -> CacheKey:
        """The cache key; templates None and the default templates share one key."""
        return fingerprint, tuple(labels), resolve_templates(templates)

    def get(self, key: CacheKey) -> np.ndarray | None:
        """The cached matrix (now most recently used), counting a hit or a miss."""
        with self._lock:
            found = self._items.get(key)
            if found is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return found

    def put(self, key: CacheKey, value: np.ndarray) -> np.ndarray:
        """Store ``value`` (read-only), evicting the least recently used past ``max_size``."""
        stored = np.array(value, dtype=np.float32)
        stored.setflags(write=False)
        if self.max_size <= 0:
            return stored
        with self._lock:
            self._items[key] = stored
            self._items.move_to_end(key)
            while len(self._items) > self.max_size:
                self._items.popitem(last=False)
        return stored

    def get_or_compute(
        self, fingerprint: str, labels: Sequence[str], templates: Sequence[str] | None, encode_texts: EncodeTexts
    ) -> np.ndarray:
        """The class embeddings for ``labels`` x ``templates``, encoding texts only on a miss."""
        key = self.key(fingerprint, labels, templates)
        found = self.get(key)
        if found is not None:
            return found
        return self.put(key, class_embeddings(labels, key[2], encode_texts))

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def clear(self) -> None:
        """Forget every entry (the hit and miss counts stay)."""
        with self._lock:
            self._items.clear()
