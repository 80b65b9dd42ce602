"""The client's settings and argument checks."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from service.client.retry import RetryPolicy
from service.client.types import ClassifySpec


@dataclass
class ClientOptions:
    """How a client splits and paces its calls."""

    timeout_s: float | None = 60.0  # deadline of each call (one chunk)
    chunk_size: int = 64  # items per call; keep at most the server's max_items_per_request
    concurrency: int = 4  # calls in flight at once
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    progress: bool | None = None  # default for every call: True, False, or None (auto for long jobs)


def texts_list(texts: Iterable[str]) -> list[str]:
    """Texts as a list, each checked to be a ``str``."""
    out = list(texts)
    for i, text in enumerate(out):
        if not isinstance(text, str):
            raise TypeError(f"texts[{i}] is a {type(text).__name__}, not a str")
    return out


def classify_spec(
    labels: Sequence[str] | None, label_set: str | None, templates: Sequence[str] | None, top_k: int, logits: bool
) -> ClassifySpec:
    """The label side of a classify call; exactly one of labels or label_set."""
    if bool(labels) == bool(label_set):
        raise ValueError("give either labels or label_set")
    return ClassifySpec(tuple(labels or ()), label_set, tuple(templates or ()), top_k, logits)


def concat(parts: Sequence[np.ndarray]) -> np.ndarray:
    """Chunk results stacked in order."""
    return parts[0] if len(parts) == 1 else np.concatenate(parts)
