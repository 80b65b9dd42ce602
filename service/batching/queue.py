"""A batcher's bounded queue, counted in items, and how batches are formed from it."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Iterable

from prometheus_client import Gauge

from service.batching.request import QueuedItem, Request
from service.errors import LimitExceeded, Overloaded


class ThroughputMeter:
    """Items computed per second over a sliding window, to suggest a retry delay when full."""

    def __init__(self, window_s: float = 10.0) -> None:
        self._window_s = window_s
        self._events: deque[tuple[float, int]] = deque()

    def add(self, items: int) -> None:
        """Record ``items`` computed now."""
        now = time.monotonic()
        self._events.append((now, items))
        while self._events[0][0] < now - self._window_s:
            self._events.popleft()

    def retry_after(self, excess_items: int, default_s: float = 1.0) -> float:
        """Seconds until ``excess_items`` should have left the queue at the recent rate."""
        since = time.monotonic() - self._window_s
        recent = sum(n for t, n in self._events if t >= since)
        if recent == 0:
            return default_s
        return float(min(30.0, max(0.05, excess_items * self._window_s / recent)))


class LoadEstimate:
    """The peak number of items in flight (submitted, not yet answered) over the last ``window_s``.

    Under a steady load of concurrent clients this says how many items a batch can expect: the
    requests that just got their answers come back within milliseconds. A lone client keeps it at 1.
    """

    def __init__(self, window_s: float = 1.0) -> None:
        self._window_s = window_s
        self._samples: deque[tuple[float, int]] = deque()  # (time, in flight), values decreasing

    def observe(self, in_flight: int) -> None:
        """Record the items in flight now."""
        now = time.monotonic()
        while self._samples and self._samples[-1][1] <= in_flight:  # a monotonic deque: O(1) peak
            self._samples.pop()
        self._samples.append((now, in_flight))

    def peak(self) -> int:
        """The most items in flight at once within the window (0 when nothing was seen)."""
        since = time.monotonic() - self._window_s
        while self._samples and self._samples[0][0] < since:
            self._samples.popleft()
        return self._samples[0][1] if self._samples else 0


class ItemQueue:
    """FIFO of queued items, at most ``size`` of them; keeps the queue-depth gauge current.

    Only live items are queued: a request that ends early (expired, cancelled, failed) is purged.
    """

    def __init__(self, size: int, label: str, depth: Gauge) -> None:
        self.size = size
        self.throughput = ThroughputMeter()
        self._label = label  # "model 'x' (image)", for messages
        self._items: deque[QueuedItem] = deque()
        self._arrived = asyncio.Event()  # set when items are put
        self._depth = depth

    def __len__(self) -> int:
        return len(self._items)

    def admit(self, count: int) -> None:
        """Raise LimitExceeded/Overloaded unless ``count`` more items fit now."""
        if count > self.size:
            raise LimitExceeded(f"request has {count} items; the queue of {self._label} holds at most {self.size}")
        excess = len(self._items) + count - self.size
        if excess > 0:
            raise Overloaded(
                f"queue full: {len(self._items)} of {self.size} items waiting for {self._label}; retry later",
                retry_after_s=self.throughput.retry_after(excess),
            )

    def put(self, items: Iterable[QueuedItem]) -> None:
        """Queue ``items`` (admitted before) and wake the batch former."""
        self._items.extend(items)
        self._changed()
        self._arrived.set()

    def purge(self, request: Request) -> int:
        """Remove the queued items of ``request``; return how many there were."""
        before = len(self._items)
        self._items = deque(item for item in self._items if item.request is not request)
        self._changed()
        return before - len(self._items)

    def clear(self) -> None:
        """Forget every queued item."""
        self._items.clear()
        self._changed()

    async def form(self, limit: int, delay_s: float) -> list[QueuedItem]:
        """Up to ``limit`` live items, waiting at most ``delay_s`` for more after the first one."""
        batch: list[QueuedItem] = []
        while not batch:
            while not self._items:
                self._arrived.clear()
                await self._arrived.wait()
            batch = self.take(limit)
        return await self.fill(batch, limit, limit, delay_s)

    async def fill(self, batch: list[QueuedItem], limit: int, want: int, delay_s: float) -> list[QueuedItem]:
        """Top ``batch`` up to ``limit`` items; while it holds fewer than ``want``, wait up to ``delay_s`` for more."""
        batch += self.take(limit - len(batch))
        close_at = time.monotonic() + delay_s
        while len(batch) < min(want, limit):
            if not self._items and not await self._wait_arrival(close_at - time.monotonic()):
                break
            batch += self.take(limit - len(batch))
        return batch

    async def _wait_arrival(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for new items; False when none came."""
        if timeout <= 0:
            return False
        self._arrived.clear()
        try:
            await asyncio.wait_for(self._arrived.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    def take(self, limit: int) -> list[QueuedItem]:
        """Up to ``limit`` queued items now, without waiting."""
        taken: list[QueuedItem] = []
        while self._items and len(taken) < limit:
            item = self._items.popleft()
            if item.request.live:  # purged requests leave none, but be safe
                taken.append(item)
        self._changed()
        return taken

    def _changed(self) -> None:
        self._depth.set(len(self._items))
