"""Fixtures for the batcher tests: a deterministic, gateable fake compute function."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import numpy as np
import pytest

from service.batching import Batcher, BatcherConfig
from service.errors import InvalidInput
from service.metrics import Metrics

CRASH = -1.0  # a payload that makes compute raise RuntimeError
INVALID = -2.0  # a payload that makes compute raise InvalidInput
MODEL, MODALITY = "test-model", "image"


class FakeCompute:
    """Row for payload p is [p, -p]. Records each batch; can be gated, crash, or miscount rows."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.batches: list[list[float]] = []
        self.calls: asyncio.Queue[list[float]] = asyncio.Queue()
        self.gate = threading.Event()
        self.gate.set()
        self.fail_next = 0  # this many calls raise RuntimeError whatever the payloads
        self.wrong_rows = False

    def __call__(self, payloads: list[float]) -> np.ndarray:
        self.batches.append(list(payloads))
        self._loop.call_soon_threadsafe(self.calls.put_nowait, list(payloads))
        if not self.gate.wait(timeout=30):
            raise TimeoutError("test gate never opened")
        if self.fail_next > 0:
            self.fail_next -= 1
            raise RuntimeError("transient device error")
        if CRASH in payloads:
            raise RuntimeError("boom")
        if INVALID in payloads:
            raise InvalidInput("payload -2 is not a valid image")
        rows = np.array([[p, -p] for p in payloads], dtype=np.float32)
        return rows[:-1] if self.wrong_rows else rows

    async def next_call(self) -> list[float]:
        """The payloads of the next compute call, once it has started."""
        return await asyncio.wait_for(self.calls.get(), 5.0)

    @property
    def seen(self) -> set[float]:
        """Every payload that reached compute."""
        return {p for batch in self.batches for p in batch}


def rows(payloads: list[float]) -> np.ndarray:
    """The rows FakeCompute returns for ``payloads``."""
    return np.array([[p, -p] for p in payloads], dtype=np.float32)


async def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Yield to the event loop until ``condition`` holds (a generous bound, not a timing claim)."""
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "condition not reached"
        await asyncio.sleep(0.001)


@dataclass
class Harness:
    """A started batcher, its fake workers and its metrics."""

    batcher: Batcher[float]
    fakes: list[FakeCompute]
    metrics: Metrics

    @property
    def fake(self) -> FakeCompute:
        """The first (often only) worker."""
        return self.fakes[0]

    def metric(self, name: str, **labels: str) -> float:
        """The value of one sample of the batcher's metrics (0 when absent)."""
        value = self.metrics.registry.get_sample_value(name, {"model": MODEL, "modality": MODALITY, **labels})
        return value or 0.0


MakeHarness = Callable[..., Awaitable[Harness]]


@pytest.fixture
async def make_batcher() -> AsyncIterator[MakeHarness]:
    """Build and start batchers over fake workers; open every gate and stop them afterwards."""
    made: list[Harness] = []

    async def make(
        workers: int = 1, max_batch_size: int = 4, max_delay_ms: float = 0.0, queue_size: int = 64,
        adaptive: bool = True,
    ) -> Harness:
        loop = asyncio.get_running_loop()
        fakes = [FakeCompute(loop) for _ in range(workers)]
        metrics = Metrics()
        config = BatcherConfig(max_batch_size=max_batch_size, max_delay_ms=max_delay_ms, queue_size=queue_size,
                                adaptive=adaptive)
        batcher: Batcher[float] = Batcher(MODEL, MODALITY, fakes, config, metrics)
        await batcher.start()
        made.append(Harness(batcher, fakes, metrics))
        return made[-1]

    yield make
    for harness in made:
        for fake in harness.fakes:
            fake.gate.set()
        await harness.batcher.stop(drain_timeout_s=5.0)
