"""Dynamic batcher behaviour, sequenced with gates and events (no timing assertions)."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from service.batching import Batcher, BatcherConfig
from service.batching.queue import ItemQueue, LoadEstimate, ThroughputMeter
from service.batching.request import QueuedItem
from service.errors import (
    DeadlineExceeded,
    InferenceError,
    InvalidInput,
    LimitExceeded,
    Overloaded,
    Unavailable,
)
from tests.batching.conftest import CRASH, INVALID, MODALITY, MODEL, FakeCompute, Harness, MakeHarness, rows, wait_until


async def submitted(
    batcher: Batcher[float], payloads: list[float], deadline: float | None = None
) -> asyncio.Task[np.ndarray]:
    """Submit in a task of its own; on return its items are queued (the task ran up to its wait)."""
    task = asyncio.create_task(batcher.submit(payloads, deadline))
    await asyncio.sleep(0)
    return task


async def occupy(
    h: Harness, ahead: list[float], deadline: float | None = None
) -> tuple[asyncio.Task[np.ndarray], asyncio.Task[np.ndarray]]:
    """Block the worker computing [1.0] and have ``ahead`` taken into the batch formed next."""
    h.fake.gate.clear()
    first = await submitted(h.batcher, [1.0])
    assert await h.fake.next_call() == [1.0]
    second = await submitted(h.batcher, ahead, deadline)
    await wait_until(lambda: h.batcher.depth == 0)  # formed while the worker is still busy
    return first, second


# -- batch forming ------------------------------------------------------------------------------


async def test_batch_closes_at_max_size(make_batcher: MakeHarness) -> None:
    h = await make_batcher(max_batch_size=4, max_delay_ms=60_000)  # only full batches close before a minute
    payloads = [float(i) for i in range(8)]
    result = await asyncio.wait_for(h.batcher.submit(payloads), 10)
    np.testing.assert_array_equal(result, rows(payloads))
    assert h.fake.batches == [payloads[:4], payloads[4:]]


async def test_single_item_waits_max_delay(make_batcher: MakeHarness) -> None:
    h = await make_batcher(max_batch_size=8, max_delay_ms=50, adaptive=False)
    begin = time.monotonic()
    result = await h.batcher.submit([7.0])
    assert time.monotonic() - begin >= 0.04  # a lower bound only: it waited for company
    np.testing.assert_array_equal(result, rows([7.0]))
    assert h.fake.batches == [[7.0]]


async def test_item_arriving_within_delay_joins_the_batch(make_batcher: MakeHarness) -> None:
    h = await make_batcher(max_batch_size=2, max_delay_ms=60_000, adaptive=False)
    first = await submitted(h.batcher, [1.0])
    await wait_until(lambda: h.batcher.depth == 0)  # taken: the batch is open, waiting for more
    second = await h.batcher.submit([2.0])  # fills the batch, which closes at once
    np.testing.assert_array_equal(await first, rows([1.0]))
    np.testing.assert_array_equal(second, rows([2.0]))
    assert h.fake.batches == [[1.0, 2.0]]


async def test_adaptive_lone_item_starts_at_once(make_batcher: MakeHarness) -> None:
    h = await make_batcher(max_batch_size=8, max_delay_ms=60_000)  # classic mode would wait a minute
    result = await asyncio.wait_for(h.batcher.submit([7.0]), 10)
    np.testing.assert_array_equal(result, rows([7.0]))
    assert h.fake.batches == [[7.0]]


async def test_adaptive_ready_worker_waits_for_the_clients_that_were_in_flight(make_batcher: MakeHarness) -> None:
    h = await make_batcher(max_batch_size=8, max_delay_ms=60_000)
    await asyncio.gather(*(h.batcher.submit([float(i)]) for i in range(3)))  # three clients at once
    first = await submitted(h.batcher, [10.0])  # their next requests come back one by one
    await wait_until(lambda: h.batcher.depth == 0)  # taken: the worker waits for the other two
    assert len(h.fake.batches) == 1
    second = await submitted(h.batcher, [11.0])
    third = await asyncio.wait_for(h.batcher.submit([12.0]), 10)
    np.testing.assert_array_equal(third, rows([12.0]))
    assert [r.tolist() for r in (await first, await second)] == [rows([10.0]).tolist(), rows([11.0]).tolist()]
    assert h.fake.batches == [[0.0, 1.0, 2.0], [10.0, 11.0, 12.0]]


async def test_adaptive_wait_for_expected_items_is_bounded_by_max_delay(make_batcher: MakeHarness) -> None:
    h = await make_batcher(max_batch_size=8, max_delay_ms=50)
    await asyncio.gather(*(h.batcher.submit([float(i)]) for i in range(3)))
    result = await asyncio.wait_for(h.batcher.submit([10.0]), 10)  # the other two never come back
    np.testing.assert_array_equal(result, rows([10.0]))
    assert h.fake.batches == [[0.0, 1.0, 2.0], [10.0]]


async def test_adaptive_expectation_is_shared_among_workers(make_batcher: MakeHarness) -> None:
    h = await make_batcher(workers=2, max_batch_size=8, max_delay_ms=60_000)
    await asyncio.gather(*(h.batcher.submit([float(i)]) for i in range(4)))  # 4 in flight: 2 per worker
    results = await asyncio.wait_for(asyncio.gather(*(h.batcher.submit([10.0 + i]) for i in range(2))), 10)
    assert [r.tolist() for r in results] == [rows([10.0]).tolist(), rows([11.0]).tolist()]


def test_load_estimate_is_the_peak_within_its_window(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    load = LoadEstimate(window_s=1.0)
    assert load.peak() == 0
    for value in (3, 16, 5):
        load.observe(value)
        now[0] += 0.3
    assert load.peak() == 16
    now[0] += 0.5  # the 16 is now 1.1 s old; the 5 is 0.6 s old
    assert load.peak() == 5
    now[0] += 1.0
    assert load.peak() == 0


async def test_requests_submitted_together_share_one_batch(make_batcher: MakeHarness) -> None:
    h = await make_batcher(max_batch_size=8, max_delay_ms=0)
    results = await asyncio.gather(*(h.batcher.submit([float(i)]) for i in range(3)))
    assert [r.tolist() for r in results] == [rows([float(i)]).tolist() for i in range(3)]
    assert h.fake.batches == [[0.0, 1.0, 2.0]]


async def test_zero_delay_takes_only_what_is_queued(make_batcher: MakeHarness) -> None:
    h = await make_batcher(max_batch_size=8, max_delay_ms=0)
    h.fake.gate.clear()
    first = await submitted(h.batcher, [1.0])
    assert await h.fake.next_call() == [1.0]  # a batch of one: no waiting for company
    second = await submitted(h.batcher, [2.0])
    h.fake.gate.set()
    await asyncio.gather(first, second)
    assert h.fake.batches == [[1.0], [2.0]]


async def test_rows_come_back_in_input_order(make_batcher: MakeHarness) -> None:
    h = await make_batcher(workers=2, max_batch_size=5, max_delay_ms=1, queue_size=256)
    requests = [[float(100 * i + j) for j in range(i % 7 + 1)] for i in range(30)]
    results = await asyncio.gather(*(h.batcher.submit(r) for r in requests))
    for request, result in zip(requests, results, strict=True):
        np.testing.assert_array_equal(result, rows(request))
    batches = [b for fake in h.fakes for b in fake.batches]
    assert all(len(b) <= 5 for b in batches)
    assert sorted(p for b in batches for p in b) == sorted(p for r in requests for p in r)
    assert h.metric("clipserve_items_embedded_total") == sum(len(r) for r in requests)


async def test_next_batch_forms_while_compute_runs(make_batcher: MakeHarness, monkeypatch: pytest.MonkeyPatch) -> None:
    forming = {"entered": 0, "returned": 0}  # the batch former's calls of ItemQueue.form
    form = ItemQueue.form

    async def counted_form(queue: ItemQueue, limit: int, delay_s: float) -> list[QueuedItem]:
        forming["entered"] += 1
        try:
            return await form(queue, limit, delay_s)
        finally:
            forming["returned"] += 1

    monkeypatch.setattr(ItemQueue, "form", counted_form)
    h = await make_batcher(max_batch_size=2, max_delay_ms=0)
    first, second = await occupy(h, [2.0, 3.0])  # batch 2 formed while batch 1 is still computing
    third = await submitted(h.batcher, [4.0])
    # Only one batch is formed ahead per worker: having formed batch 2, the former is not forming a
    # third but waiting for a slot, which only the worker gives back when it takes batch 2, after
    # computing [1.0] (gated). So [4.0] stays queued until then.
    assert forming == {"entered": 2, "returned": 2}
    assert h.batcher.depth == 1
    h.fake.gate.set()
    await asyncio.gather(first, second, third)
    assert h.fake.batches == [[1.0], [2.0, 3.0], [4.0]]


async def test_batch_formed_ahead_is_topped_up_when_taken(make_batcher: MakeHarness) -> None:
    h = await make_batcher(max_batch_size=4, max_delay_ms=0)
    first, second = await occupy(h, [2.0])  # formed ahead alone: no delay to wait for company
    third = await submitted(h.batcher, [3.0, 4.0])
    h.fake.gate.set()
    await asyncio.gather(first, second, third)
    assert h.fake.batches == [[1.0], [2.0, 3.0, 4.0]]


async def test_workers_share_the_queue(make_batcher: MakeHarness) -> None:
    h = await make_batcher(workers=2, max_batch_size=1, max_delay_ms=0)
    for fake in h.fakes:
        fake.gate.clear()
    tasks = [await submitted(h.batcher, [float(i)]) for i in range(2)]
    calls = [await fake.next_call() for fake in h.fakes]  # both compute at once
    assert sorted(c[0] for c in calls) == [0.0, 1.0]
    for fake in h.fakes:
        fake.gate.set()
    results = await asyncio.gather(*tasks)
    assert [r.tolist() for r in results] == [rows([0.0]).tolist(), rows([1.0]).tolist()]


# -- backpressure, deadlines, cancellation --------------------------------------------------------


async def test_full_queue_is_refused_without_queueing(make_batcher: MakeHarness) -> None:
    h = await make_batcher(max_batch_size=1, max_delay_ms=0, queue_size=4)
    first, second = await occupy(h, [2.0])
    third = await submitted(h.batcher, [3.0, 4.0, 5.0, 6.0])
    await wait_until(lambda: h.batcher.depth == 4)
    with pytest.raises(Overloaded, match="of 4 items") as info:
        await h.batcher.submit([7.0])
    assert info.value.retry_after_s is not None and info.value.retry_after_s > 0
    assert h.batcher.depth == 4
    h.fake.gate.set()
    await asyncio.gather(first, second, third)
    assert 7.0 not in h.fake.seen
    with pytest.raises(LimitExceeded, match="at most 4"):
        await h.batcher.submit([float(i) for i in range(5)])


async def test_expired_items_never_reach_compute(make_batcher: MakeHarness) -> None:
    h = await make_batcher(max_batch_size=1, max_delay_ms=0)
    deadline = time.monotonic() + 0.25
    first, formed = await occupy(h, [2.0], deadline)
    queued = await submitted(h.batcher, [3.0], deadline=deadline)
    in_time = time.monotonic() < deadline  # both were queued before the deadline (bar a stalled machine)
    for task in (formed, queued):
        with pytest.raises(DeadlineExceeded, match="timed out"):
            await asyncio.wait_for(task, 5)
    assert h.batcher.depth == 0
    h.fake.gate.set()
    await first
    np.testing.assert_array_equal(await h.batcher.submit([4.0]), rows([4.0]))
    assert h.fake.seen == {1.0, 4.0}
    if in_time:  # one dropped from the batch formed ahead, one from the queue
        assert h.metric("clipserve_dropped_items_total", reason="expired") == 2


async def test_deadline_ends_the_wait_while_compute_runs(make_batcher: MakeHarness) -> None:
    h = await make_batcher()
    h.fake.gate.clear()
    slow = await submitted(h.batcher, [1.0], deadline=time.monotonic() + 0.05)
    assert await h.fake.next_call() == [1.0]
    with pytest.raises(DeadlineExceeded):
        await asyncio.wait_for(slow, 5)  # the compute is still blocked: the client is not
    h.fake.gate.set()
    np.testing.assert_array_equal(await h.batcher.submit([2.0]), rows([2.0]))


async def test_past_deadline_is_refused_at_once(make_batcher: MakeHarness) -> None:
    h = await make_batcher()
    with pytest.raises(DeadlineExceeded):
        await h.batcher.submit([1.0], deadline=time.monotonic() - 1)
    assert h.batcher.depth == 0 and h.fake.batches == []


async def test_cancelled_request_never_reaches_compute(make_batcher: MakeHarness) -> None:
    h = await make_batcher(max_batch_size=2, max_delay_ms=0)
    first, formed = await occupy(h, [2.0, 3.0])
    queued = await submitted(h.batcher, [4.0])
    kept = await submitted(h.batcher, [5.0])
    await wait_until(lambda: h.batcher.depth == 2)
    formed.cancel()
    queued.cancel()
    await asyncio.gather(formed, queued, return_exceptions=True)
    assert formed.cancelled() and queued.cancelled()
    assert h.batcher.depth == 1
    h.fake.gate.set()
    await first
    np.testing.assert_array_equal(await kept, rows([5.0]))
    assert h.fake.seen == {1.0, 5.0}
    assert h.metric("clipserve_dropped_items_total", reason="cancelled") == 3


# -- failures -------------------------------------------------------------------------------------


async def test_bad_item_fails_only_its_own_request(make_batcher: MakeHarness) -> None:
    h = await make_batcher(max_batch_size=8, max_delay_ms=0)
    results = await asyncio.gather(
        h.batcher.submit([1.0, 2.0]), h.batcher.submit([CRASH]), h.batcher.submit([3.0]), return_exceptions=True
    )
    good, bad, other = results
    np.testing.assert_array_equal(good, rows([1.0, 2.0]))
    np.testing.assert_array_equal(other, rows([3.0]))
    assert isinstance(bad, InferenceError)
    assert MODEL in bad.message and MODALITY in bad.message and "RuntimeError" in bad.message
    assert h.fake.batches == [[1.0, 2.0, CRASH, 3.0], [1.0, 2.0], [CRASH], [3.0]]
    assert h.metric("clipserve_batch_errors_total") == 2


async def test_clip_serve_errors_from_compute_pass_through(make_batcher: MakeHarness) -> None:
    h = await make_batcher(max_batch_size=8, max_delay_ms=0)
    results = await asyncio.gather(h.batcher.submit([INVALID]), h.batcher.submit([1.0]), return_exceptions=True)
    bad, good = results
    assert isinstance(bad, InvalidInput) and "not a valid image" in bad.message
    np.testing.assert_array_equal(good, rows([1.0]))


async def test_transient_batch_failure_is_retried_per_request(make_batcher: MakeHarness) -> None:
    h = await make_batcher(max_batch_size=8, max_delay_ms=0)
    h.fake.fail_next = 1
    results = await asyncio.gather(h.batcher.submit([1.0]), h.batcher.submit([2.0, 3.0]))
    np.testing.assert_array_equal(results[1], rows([2.0, 3.0]))
    assert h.fake.batches == [[1.0, 2.0, 3.0], [1.0], [2.0, 3.0]]


async def test_worker_keeps_serving_after_a_crashed_batch(make_batcher: MakeHarness) -> None:
    h = await make_batcher(max_batch_size=4, max_delay_ms=0)
    for round_ in range(3):
        with pytest.raises(InferenceError, match="RuntimeError"):
            await h.batcher.submit([CRASH, float(round_)])
        payloads = [float(10 * round_ + i) for i in range(6)]
        np.testing.assert_array_equal(await h.batcher.submit(payloads), rows(payloads))
    assert h.fake.batches[0] == [CRASH, 0.0]  # a batch of one request is not retried
    assert h.fake.batches[1] == [0.0, 1.0, 2.0, 3.0]


async def test_wrong_row_count_is_an_inference_error(make_batcher: MakeHarness) -> None:
    h = await make_batcher()
    h.fake.wrong_rows = True
    with pytest.raises(InferenceError, match=r"shape \(1, 2\) for 2 items"):
        await h.batcher.submit([1.0, 2.0])
    h.fake.wrong_rows = False
    np.testing.assert_array_equal(await h.batcher.submit([1.0, 2.0]), rows([1.0, 2.0]))


# -- lifecycle and metrics ------------------------------------------------------------------------


async def test_stop_drains_queued_work_and_refuses_new(make_batcher: MakeHarness) -> None:
    h = await make_batcher(max_batch_size=2, max_delay_ms=0)
    first, formed = await occupy(h, [2.0, 3.0])
    queued = await submitted(h.batcher, [4.0])
    stopping = asyncio.create_task(h.batcher.stop(drain_timeout_s=10))
    await asyncio.sleep(0)
    with pytest.raises(Unavailable, match="shutting down"):
        await h.batcher.submit([5.0])
    h.fake.gate.set()
    await stopping
    for task, payloads in ((first, [1.0]), (formed, [2.0, 3.0]), (queued, [4.0])):
        np.testing.assert_array_equal(await task, rows(payloads))
    assert 5.0 not in h.fake.seen


async def test_stop_fails_what_is_left_after_the_drain_timeout(make_batcher: MakeHarness) -> None:
    h = await make_batcher(max_batch_size=1, max_delay_ms=0)
    h.fake.gate.clear()
    tasks = [await submitted(h.batcher, [float(i)]) for i in range(4)]
    await h.fake.next_call()
    stopping = asyncio.create_task(h.batcher.stop(drain_timeout_s=0.01))
    for task in tasks:  # computing, formed ahead and queued: all end, none hangs
        with pytest.raises(Unavailable, match="shutting down"):
            await task
    assert h.batcher.depth == 0
    assert not stopping.done()  # stop waits for the compute call still running in its thread
    h.fake.gate.set()
    await asyncio.wait_for(stopping, 5)


async def test_metrics_describe_the_batches(make_batcher: MakeHarness) -> None:
    h = await make_batcher(max_batch_size=4, max_delay_ms=0)
    await h.batcher.submit([float(i) for i in range(6)])
    assert h.metric("clipserve_batch_size_count") == 2
    assert h.metric("clipserve_batch_size_sum") == 6
    assert h.metric("clipserve_inference_duration_seconds_count") == 2
    assert h.metric("clipserve_queue_wait_duration_seconds_count") == 6
    assert h.metric("clipserve_items_embedded_total") == 6
    assert h.metric("clipserve_queue_depth") == 0


async def test_submit_before_start_and_empty_requests() -> None:
    batcher: Batcher[float] = Batcher(MODEL, MODALITY, [FakeCompute(asyncio.get_running_loop())], BatcherConfig())
    with pytest.raises(Unavailable, match="not started"):
        await batcher.submit([1.0])
    await batcher.start()
    assert (await batcher.submit([])).shape == (0, 0)
    await batcher.stop()
    with pytest.raises(ValueError):
        BatcherConfig(max_batch_size=0)


def test_retry_after_follows_recent_throughput() -> None:
    meter = ThroughputMeter(window_s=10.0)
    assert meter.retry_after(5) == 1.0  # nothing measured yet: the default
    meter.add(100)  # 10 items/s over the window
    assert meter.retry_after(20) == pytest.approx(2.0)
    assert meter.retry_after(10_000) == 30.0  # capped
