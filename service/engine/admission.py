"""Admission at the door: work that cannot finish within its deadline is refused at once (429).

Every engine call asks for its items before anything is decoded or preprocessed. Items in flight
are counted per model and modality (images and texts have batchers of their own) and in total. The
bound of a model's modality follows its measured drain rate: ``rate x request_timeout_s x
FILL_FRACTION``, so that the work admitted waits a tenth of the request timeout at most (3 s of
the default 30 s); before there is a measurement the bound is ``queue_size``. It is
never below ``FLOOR_BATCHES`` batches (a burst after an idle spell still batches well), never above
``queue_size`` (the batcher's own queue) or ``max_items_in_flight`` in total (memory: a preprocessed
image is held until its batch runs). The refusal's ``Retry-After`` is the time the excess needs to
drain at the measured rate.

The drain rate is items finished per second of busy time (time with work in flight), weighted
towards the last ``HALF_LIFE_S`` seconds: under load it is the throughput; at low load it is the
inverse of latency, an underestimate that only matters if the next burst is huge.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from service.config import Settings
from service.errors import Overloaded
from service.metrics import Metrics

# Of the request timeout, what admitted work may spend waiting behind earlier work: short waits keep
# latency and memory low under overload, and a few seconds of queue still keeps every worker busy.
FILL_FRACTION = 0.1
FLOOR_BATCHES = 2
HALF_LIFE_S = 10.0
MIN_BUSY_S = 0.5  # busy time needed before the measured rate is trusted
MAX_RETRY_AFTER_S = 30.0


@dataclass
class DrainRate:
    """Items finished per second of busy time, exponentially weighted (half-life ``HALF_LIFE_S``)."""

    items: float = 0.0
    busy_s: float = 0.0
    in_flight: int = 0
    last: float = 0.0

    def advance(self, now: float) -> None:
        """Age the counts and add the busy time since the last call."""
        elapsed = now - self.last
        if self.last and elapsed > 0:
            decay = 0.5 ** (elapsed / HALF_LIFE_S)
            self.items *= decay
            self.busy_s = self.busy_s * decay + (elapsed if self.in_flight > 0 else 0.0)
        self.last = now

    def rate(self) -> float | None:
        """Items per second, or None before ``MIN_BUSY_S`` of busy time was seen."""
        return self.items / self.busy_s if self.busy_s >= MIN_BUSY_S and self.items > 0 else None


class Admission:
    """Counts the items in flight and refuses what would exceed the bound (``Overloaded``, 429)."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self._settings = settings
        self._metrics = metrics
        self._rates: dict[tuple[str, str], DrainRate] = {}
        self.total = 0

    def bound(self, model: str, modality: str) -> int:
        """How many items of ``modality`` may be in flight for ``model`` now."""
        settings = self._settings
        floor = FLOOR_BATCHES * settings.max_batch_size * settings.workers_per_model
        rate = self._rate(model, modality).rate()
        wanted = settings.queue_size if rate is None else int(rate * settings.request_timeout_s * FILL_FRACTION)
        return max(floor, min(wanted, settings.queue_size))

    def saturated(self) -> bool:
        """True when a new request is refused before its body is read.

        That is when the total bound is reached, or when every model and modality with work in flight
        is at its bound:
        the server's compute is taken, and parsing bodies only to refuse them would take the event
        loop too (measured: at 4x capacity of one-image requests, the loop fell behind and
        connections piled up to uvicorn's limit).
        """
        if self.total >= self._settings.max_items_in_flight:
            return True
        active = [(key, state) for key, state in self._rates.items() if state.in_flight > 0]
        return bool(active) and all(state.in_flight >= self.bound(*key) for key, state in active)

    @contextmanager
    def admit(self, model: str, images: int, texts: int) -> Iterator[None]:
        """Hold ``images`` and ``texts`` items of ``model`` while the block runs; Overloaded if they don't fit."""
        wanted = [(modality, n) for modality, n in (("image", images), ("text", texts)) if n]
        for modality, n in wanted:
            self._check(model, modality, n)
        self._check_total(images + texts)
        now = time.monotonic()
        for modality, n in wanted:
            self._take(model, modality, n, now)
        finished = False
        try:
            yield
            finished = True
        finally:
            now = time.monotonic()
            for modality, n in wanted:
                self._give_back(model, modality, n, now, finished)

    def _rate(self, model: str, modality: str) -> DrainRate:
        return self._rates.setdefault((model, modality), DrainRate())

    def _check(self, model: str, modality: str, count: int) -> None:
        state, limit = self._rate(model, modality), self.bound(model, modality)
        excess = state.in_flight + count - limit
        if excess > 0 and state.in_flight > 0:  # an idle model takes any request within the item limit
            self._refuse(
                f"over capacity: {state.in_flight} {modality} items in flight for model {model!r} "
                f"(bound {limit}, from its drain rate and request_timeout_s); retry later",
                excess, state.rate(), model,
            )

    def _check_total(self, count: int) -> None:
        limit = self._settings.max_items_in_flight
        if self.total and self.total + count > limit:
            rates = [r for r in (state.rate() for state in self._rates.values()) if r]
            self._refuse(
                f"over capacity: {self.total} items in flight in total (max_items_in_flight {limit}); retry later",
                self.total + count - limit, sum(rates) or None, "",
            )

    def _refuse(self, message: str, excess: int, rate: float | None, model: str) -> None:
        retry = 1.0 if rate is None else min(MAX_RETRY_AFTER_S, max(1.0, excess / rate))
        self._metrics.rejected.labels(model=model or "*", reason="admission").inc()
        raise Overloaded(message, retry_after_s=float(math.ceil(retry)))

    def _take(self, model: str, modality: str, count: int, now: float) -> None:
        state = self._rate(model, modality)
        state.advance(now)
        state.in_flight += count
        self.total += count

    def _give_back(self, model: str, modality: str, count: int, now: float, finished: bool) -> None:
        state = self._rate(model, modality)
        state.advance(now)
        state.in_flight -= count
        self.total -= count
        if finished:
            state.items += count
