"""Dynamic batcher: groups the items of concurrent requests into batches for the model workers.

One ``Batcher`` per model and modality. Requests ``submit`` their items (already preprocessed
payloads: pixel arrays or token lists) onto one bounded queue. A forming task takes items into the
next batch while the workers compute (one formed batch ahead per worker); a worker tops its batch up
with items queued meanwhile when it takes it, and runs its compute function in a thread of its own,
so the event loop stays free.

When a batch closes (``adaptive``, the default): at ``max_batch_size`` items, or once it holds as many
items as were recently in flight at once (per worker), or ``max_delay_ms`` after its worker became
ready for it. A lone client's request therefore starts at once, while concurrent clients, whose
answered requests come straight back, share one batch instead of splitting into several smaller
ones. With ``adaptive`` off (Triton's dynamic batcher): a batch waits up to ``max_delay_ms`` after its
first item for ``max_batch_size`` items.

Every accepted request ends with rows or an error: expired deadlines, cancelled clients, crashed
batches (retried request by request, so one bad item fails only its own request) and shutdown.

Log lines: a request records the id of the client request that submitted it (``service.logs.REQUEST``),
since the batcher's tasks run outside any request. A line about a batch lists the ids it carried, in
its message and as ``request_ids``; when they are all one request's, ``request_id`` is that id too.
At DEBUG level every batch run logs one line (``batch of N items for model 'm' (text): request ids
a,b``) and every dropped request one line (expired, cancelled, shutdown).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

from service.batching.queue import ItemQueue, LoadEstimate
from service.batching.request import QueuedItem, Request, check_rows, client_error, request_ids
from service.config import Settings
from service.errors import DeadlineExceeded, Unavailable
from service.logs import REQUEST
from service.metrics import Metrics

P = TypeVar("P")
ComputeFn = Callable[[list[Any]], np.ndarray]

log = logging.getLogger(__name__)

STOP_GRACE_S = 5.0  # after the drain, how long stop() waits for compute calls already running


def ids_of(items: Sequence[QueuedItem]) -> tuple[str, dict[str, Any]]:
    """The request ids of a batch's items: as text for a log message, and as ``extra`` for the record.

    ``extra`` holds ``request_ids`` (distinct, in order) and, when all items are one request's,
    ``request_id`` (which the log filter keeps instead of the batcher task's ``-``).
    """
    ids = request_ids(items)
    extra: dict[str, Any] = {"request_ids": ids}
    if len(ids) == 1:
        extra["request_id"] = ids[0]
    return ",".join(ids), extra


_DEFAULTS = Settings.model_fields


@dataclass(frozen=True)
class BatcherConfig:
    """Batcher knobs (Triton's names): batch size, queue delay, queue size (in items); adaptive closing.

    The defaults are the settings' (``service.config.Settings``): one default per knob.
    """

    max_batch_size: int = _DEFAULTS["max_batch_size"].default
    max_delay_ms: float = _DEFAULTS["max_delay_ms"].default
    queue_size: int = _DEFAULTS["queue_size"].default
    adaptive: bool = _DEFAULTS["adaptive_batching"].default

    def __post_init__(self) -> None:
        if self.max_batch_size < 1 or self.queue_size < 1 or self.max_delay_ms < 0:
            raise ValueError(f"invalid batcher config: {self}")


class Batcher(Generic[P]):
    """Groups items into batches and runs them on one or more workers.

    ``workers`` are compute functions, one per worker instance (e.g. one per GPU); each takes a
    list of payloads and returns an (N, D) array, row i for payload i. Each runs in its own
    single-thread executor, so a compute function is never called concurrently with itself.
    """

    def __init__(
        self,
        model: str,
        modality: str,
        workers: Sequence[ComputeFn],
        config: BatcherConfig,
        metrics: Metrics | None = None,
    ) -> None:
        if not workers:
            raise ValueError("a Batcher needs at least one worker")
        self.model, self.modality = model, modality
        self._workers = list(workers)
        self._config = config
        m = metrics or Metrics()
        labels = {"model": model, "modality": modality}
        self._queue = ItemQueue(config.queue_size, f"model {model!r} ({modality})", m.queue_depth.labels(**labels))
        self._formed: asyncio.Queue[list[QueuedItem]] = asyncio.Queue()
        self._slots = asyncio.Semaphore(len(self._workers))  # batches that may be formed ahead
        self._pending: set[Request] = set()
        self._in_flight = 0  # items of pending requests
        self._load = LoadEstimate()
        self._computing: set[asyncio.Future[Any]] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._executors: list[ThreadPoolExecutor] = []
        self._state = "new"  # new -> running -> closing -> stopped
        self._m_wait = m.queue_wait.labels(**labels)
        self._m_inference = m.inference.labels(**labels)
        self._m_batch = m.batch_size.labels(**labels)
        self._m_items = m.items.labels(**labels)
        self._m_errors = m.batch_errors.labels(**labels)
        self._m_dropped = {r: m.dropped_items.labels(reason=r, **labels) for r in ("expired", "cancelled")}

    async def start(self) -> None:
        """Start the batch-forming task and one consumer task per worker."""
        if self._state != "new":
            raise RuntimeError(f"batcher {self.model}/{self.modality} was already started")
        name = f"{self.model}-{self.modality}"
        self._executors = [
            ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"clipserve-{name}-{i}")
            for i in range(len(self._workers))
        ]
        self._tasks = [asyncio.create_task(self._form_loop(), name=f"batcher-{name}-form")]
        self._tasks += [
            asyncio.create_task(self._work_loop(fn, ex), name=f"batcher-{name}-worker-{i}")
            for i, (fn, ex) in enumerate(zip(self._workers, self._executors, strict=True))
        ]
        self._state = "running"

    async def submit(self, payloads: Sequence[P], deadline: float | None = None) -> np.ndarray:
        """Queue one request's items; return their result rows (N, D) in input order.

        Raises Overloaded when the queue cannot take them all (nothing is queued then),
        LimitExceeded when the request alone is larger than the queue, DeadlineExceeded when
        ``deadline`` (a ``time.monotonic()`` value) passes first, Unavailable when not started or
        shutting down, and InvalidInput/InferenceError when compute fails. Cancelling the awaiting
        task drops the request's items that have not been computed yet. No items: a (0, 0) array.
        """
        if self._state != "running":
            state = "not started" if self._state == "new" else "shutting down"
            raise Unavailable(f"server is {state} (batcher for model {self.model!r}, {self.modality})")
        self._queue.admit(len(payloads))
        if not payloads:
            return np.zeros((0, 0), dtype=np.float32)
        now = time.monotonic()
        if deadline is not None and deadline <= now:
            raise DeadlineExceeded("request timed out before it was queued (deadline already passed)")
        ctx = REQUEST.get()
        request = Request(
            len(payloads), asyncio.get_running_loop().create_future(), deadline, now, ctx.request_id if ctx else "-"
        )
        self._pending.add(request)
        self._in_flight += request.size
        request.future.add_done_callback(lambda _: self._forget(request))
        self._queue.put(QueuedItem(request, i, p) for i, p in enumerate(payloads))
        self._load.observe(self._in_flight)
        return await self._wait(request)

    def _forget(self, request: Request) -> None:
        """A request ended (rows, error or cancellation): it is no longer pending."""
        self._pending.discard(request)
        self._in_flight -= request.size

    @property
    def depth(self) -> int:
        """Items waiting now (queued, not yet taken into a batch)."""
        return len(self._queue)

    @property
    def in_flight(self) -> int:
        """Items of the requests not answered yet (queued, formed or computing)."""
        return self._in_flight

    async def stop(self, drain_timeout_s: float = 0.0) -> None:
        """Refuse new items, finish queued ones (up to ``drain_timeout_s``), then stop the workers.

        Requests still pending after the drain get Unavailable. Compute calls already running in
        a thread cannot be interrupted: stop waits for them (up to ``STOP_GRACE_S`` more) so that
        the caller may release the model afterwards; their rows are discarded.
        """
        if self._state == "stopped":
            return
        self._state = "closing"
        await self._drain(time.monotonic() + drain_timeout_s)
        for request in list(self._pending):
            self._drop(request, None, Unavailable("server is shutting down"))
        self._queue.clear()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._computing:
            await asyncio.wait(self._computing, timeout=STOP_GRACE_S)
        for executor in self._executors:
            executor.shutdown(wait=False, cancel_futures=True)
        self._state = "stopped"

    async def _drain(self, until: float) -> None:
        """Wait until no request is pending and no compute runs, or until ``until``."""
        while (self._pending or self._computing) and time.monotonic() < until:
            waiting = {r.future for r in self._pending} | self._computing
            await asyncio.wait(waiting, timeout=until - time.monotonic(), return_when=asyncio.FIRST_COMPLETED)

    # -- waiting and dropping -------------------------------------------------------------------

    async def _wait(self, request: Request) -> np.ndarray:
        """Await the request's rows until its deadline; cancellation drops its items."""
        timeout = None if request.deadline is None else max(0.0, request.deadline - time.monotonic())
        try:
            return await asyncio.wait_for(asyncio.shield(request.future), timeout)
        except asyncio.TimeoutError:
            self._expire(request)
            return request.future.result()  # rows if they arrived at the last moment, else raises
        except asyncio.CancelledError:
            self._drop(request, "cancelled", None)
            raise

    def _expire(self, request: Request) -> None:
        waited = time.monotonic() - request.submitted
        self._drop(request, "expired", DeadlineExceeded(f"request timed out after {waited:.3f}s waiting in queue"))

    def _drop(self, request: Request, reason: str | None, error: BaseException | None) -> None:
        """End a live request (with ``error``, or cancel it) and purge its queued items."""
        if not request.live:
            return
        request.drop_reason = reason
        if error is None:
            request.future.cancel()
        else:
            request.fail(error)
        purged = self._queue.purge(request)
        if reason is not None and purged:
            self._m_dropped[reason].inc(purged)
        log.debug(
            "batcher %s/%s: request %s dropped (%s), %d queued items purged", self.model, self.modality,
            request.request_id, reason or "shutting down", purged, extra={"request_id": request.request_id},
        )

    def _live(self, batch: list[QueuedItem]) -> list[QueuedItem]:
        """The items still worth computing: drop those of expired or ended requests."""
        now = time.monotonic()
        live: list[QueuedItem] = []
        for item in batch:
            request = item.request
            if request.live and request.expired(now):
                self._expire(request)
            if request.live:
                live.append(item)
            elif request.drop_reason is not None:
                self._m_dropped[request.drop_reason].inc()
        return live

    # -- forming and computing ------------------------------------------------------------------

    async def _form_loop(self) -> None:
        """Form batches, at most one ahead per worker, for the workers to take."""
        delay_s = 0.0 if self._config.adaptive else self._config.max_delay_ms / 1000  # adaptive: workers wait
        while True:
            await self._slots.acquire()
            self._formed.put_nowait(await self._queue.form(self._config.max_batch_size, delay_s))

    def _expected(self) -> int:
        """Items a worker's batch may expect now: the recent peak in flight, shared among the workers."""
        share = -(-self._load.peak() // len(self._workers))  # ceiling division
        return max(1, min(self._config.max_batch_size, share))

    async def _work_loop(self, fn: ComputeFn, executor: ThreadPoolExecutor) -> None:
        """Take formed batches and compute them; never dies of a batch's failure."""
        limit, adaptive = self._config.max_batch_size, self._config.adaptive
        delay_s = self._config.max_delay_ms / 1000 if adaptive else 0.0
        while True:
            batch = await self._formed.get()
            # Top up with items queued meanwhile; adaptive: wait (bounded) for the items expected.
            batch = await self._queue.fill(batch, limit, self._expected() if adaptive else 0, delay_s)
            self._slots.release()  # after the fill: the former must not take the items this worker waits for
            try:
                await self._run_batch(fn, executor, batch)
            except Exception as exc:  # a bug here must not stop the worker or leave futures pending
                ids, extra = ids_of(batch)
                log.exception(
                    "batcher %s/%s: unexpected error in a batch of %d items: request ids %s",
                    self.model, self.modality, len(batch), ids, extra=extra,
                )
                for item in batch:
                    item.request.fail(client_error(exc, self.model, self.modality))

    async def _run_batch(self, fn: ComputeFn, executor: ThreadPoolExecutor, batch: list[QueuedItem]) -> None:
        """Compute the live items of ``batch``; when that raises, retry request by request."""
        items = self._live(batch)
        if not items:
            return
        started = time.monotonic()
        for item in items:
            self._m_wait.observe(started - item.request.submitted)
        try:
            rows = await self._compute(fn, executor, items)
        except Exception as exc:
            groups: dict[Request, list[QueuedItem]] = {}
            for item in items:
                groups.setdefault(item.request, []).append(item)
            if len(groups) == 1:  # a retry would run the very same batch again
                next(iter(groups)).fail(client_error(exc, self.model, self.modality))
                return
            for group in groups.values():
                await self._run_alone(fn, executor, group)
            return
        self._deliver(items, rows)

    async def _run_alone(self, fn: ComputeFn, executor: ThreadPoolExecutor, group: list[QueuedItem]) -> None:
        """Retry one request's items of a failed batch on their own."""
        items = self._live(group)
        if not items:
            return
        try:
            rows = await self._compute(fn, executor, items)
        except Exception as exc:
            items[0].request.fail(client_error(exc, self.model, self.modality))
            return
        self._deliver(items, rows)

    async def _compute(self, fn: ComputeFn, executor: ThreadPoolExecutor, items: list[QueuedItem]) -> np.ndarray:
        """Run ``fn`` on the items' payloads in the worker's thread; check the rows it returns."""
        payloads = [item.payload for item in items]
        if log.isEnabledFor(logging.DEBUG):  # the hot path: build the id list only when it is logged
            ids, extra = ids_of(items)
            log.debug(
                "batch of %d items for model %r (%s): request ids %s", len(items), self.model, self.modality, ids,
                extra=extra,
            )
        begin = time.perf_counter()
        running = asyncio.get_running_loop().run_in_executor(executor, fn, payloads)
        self._computing.add(running)
        running.add_done_callback(self._computing.discard)
        try:  # shielded: cancelling the worker (stop) must not hide that the thread still runs
            rows = check_rows(await asyncio.shield(running), len(items), self.model, self.modality)
        except Exception:
            self._m_errors.inc()
            ids, extra = ids_of(items)
            log.warning(
                "batcher %s/%s: batch of %d items failed: request ids %s", self.model, self.modality, len(items), ids,
                exc_info=True, extra=extra,
            )
            raise
        finally:
            self._m_inference.observe(time.perf_counter() - begin)
            self._m_batch.observe(len(items))
        self._m_items.inc(len(items))
        self._queue.throughput.add(len(items))
        return rows

    def _deliver(self, items: list[QueuedItem], rows: np.ndarray) -> None:
        self._load.observe(self._in_flight)  # the peak, as the answered clients are about to come back
        for item, row in zip(items, rows, strict=True):
            item.request.accept(item.position, row)
