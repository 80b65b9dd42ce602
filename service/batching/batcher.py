"""Dynamic batcher (interface; implementation in progress).

One ``Batcher`` per model and modality. Requests ``submit`` their items (already preprocessed
payloads: pixel arrays or token lists); worker loops take up to ``max_batch_size`` items, waiting
at most ``max_delay_ms`` after the first, and run a compute function in a thread.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

from service.metrics import Metrics

P = TypeVar("P")
ComputeFn = Callable[[list[Any]], np.ndarray]


@dataclass(frozen=True)
class BatcherConfig:
    """Batcher knobs (Triton's names): batch size, queue delay, queue size."""

    max_batch_size: int = 32
    max_delay_ms: float = 5.0
    queue_size: int = 1024


class Batcher(Generic[P]):
    """Groups items into batches and runs them on one or more workers.

    ``workers`` are compute functions, one per worker instance (e.g. one per GPU); each takes a
    list of payloads and returns an (N, D) array, row i for payload i.
    """

    def __init__(
        self,
        model: str,
        modality: str,
        workers: Sequence[ComputeFn],
        config: BatcherConfig,
        metrics: Metrics | None = None,
    ) -> None:
        raise NotImplementedError

    async def start(self) -> None:
        """Start one consumer task per worker."""
        raise NotImplementedError

    async def submit(self, payloads: Sequence[P], deadline: float | None = None) -> np.ndarray:
        """Queue one request's items; return their result rows in input order.

        Raises Overloaded when the queue cannot take them all, DeadlineExceeded when ``deadline``
        (a ``time.monotonic()`` value) passes first, InvalidInput/InferenceError when compute fails.
        Cancelling the awaiting task drops the request's items that have not been computed yet.
        """
        raise NotImplementedError

    @property
    def depth(self) -> int:
        """Items waiting now."""
        raise NotImplementedError

    async def stop(self, drain_timeout_s: float = 0.0) -> None:
        """Refuse new items, finish queued ones (up to ``drain_timeout_s``), then stop the workers."""
        raise NotImplementedError
