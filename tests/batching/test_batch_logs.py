"""The batcher's log lines carry the request ids of the batches and requests they are about."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

import numpy as np
import pytest

from service.batching import Batcher
from service.batching.batcher import log as batcher_log
from service.errors import DeadlineExceeded, InferenceError
from service.logs import REQUEST, RequestContext
from tests.batching.conftest import CRASH, MakeHarness, rows


async def submit_as(
    request_id: str, batcher: Batcher[float], payloads: Sequence[float], deadline: float | None = None
) -> np.ndarray:
    """Submit as the client request ``request_id`` would (its id set in ``REQUEST``)."""
    token = REQUEST.set(RequestContext(request_id))
    try:
        return await batcher.submit(payloads, deadline)
    finally:
        REQUEST.reset(token)


def batcher_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """The records the batcher wrote."""
    return [r for r in caplog.records if r.name == batcher_log.name]


async def test_a_crashed_batch_lists_its_requests_and_the_retry_names_the_bad_one(
    make_batcher: MakeHarness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=batcher_log.name)
    h = await make_batcher(max_batch_size=8, max_delay_ms=0)
    results = await asyncio.gather(
        submit_as("good", h.batcher, [1.0, 2.0]), submit_as("bad", h.batcher, [CRASH]),
        submit_as("other", h.batcher, [3.0]), return_exceptions=True,
    )
    assert isinstance(results[1], InferenceError)
    assert h.fake.batches == [[1.0, 2.0, CRASH, 3.0], [1.0, 2.0], [CRASH], [3.0]]
    crashed, retried = batcher_records(caplog)
    assert crashed.request_ids == ["good", "bad", "other"]  # type: ignore[attr-defined]
    assert "batch of 4 items failed: request ids good,bad,other" in crashed.getMessage()
    assert not hasattr(crashed, "request_id")  # several requests: the filter leaves it to `-`
    assert retried.request_ids == ["bad"] and retried.request_id == "bad"  # type: ignore[attr-defined]
    assert "batch of 1 items failed: request ids bad" in retried.getMessage()


async def test_each_batch_run_logs_its_request_ids_at_debug(
    make_batcher: MakeHarness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=batcher_log.name)
    h = await make_batcher(max_batch_size=8, max_delay_ms=0)
    h.fake.gate.clear()
    first = asyncio.create_task(submit_as("first", h.batcher, [1.0]))
    assert await h.fake.next_call() == [1.0]
    together = [asyncio.create_task(submit_as(rid, h.batcher, [p])) for rid, p in (("a", 2.0), ("b", 3.0))]
    anonymous = asyncio.create_task(h.batcher.submit([4.0]))  # outside any request
    await asyncio.sleep(0)  # let them queue behind the busy worker
    h.fake.gate.set()
    await asyncio.gather(first, *together, anonymous)
    assert h.fake.batches == [[1.0], [2.0, 3.0, 4.0]]
    lines = [(r.getMessage(), r.request_ids) for r in batcher_records(caplog)]  # type: ignore[attr-defined]
    assert lines == [
        ("batch of 1 items for model 'test-model' (image): request ids first", ["first"]),
        ("batch of 3 items for model 'test-model' (image): request ids a,b,-", ["a", "b", "-"]),
    ]


async def test_no_batch_line_is_built_above_debug(make_batcher: MakeHarness, caplog: pytest.LogCaptureFixture,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.INFO, logger=batcher_log.name)
    built: list[object] = []
    monkeypatch.setattr("service.batching.batcher.ids_of", lambda items: built.append(items))
    h = await make_batcher()
    np.testing.assert_array_equal(await submit_as("quiet", h.batcher, [1.0]), rows([1.0]))
    assert built == [] and batcher_records(caplog) == []


async def test_an_expired_request_is_logged_with_its_id(make_batcher: MakeHarness,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=batcher_log.name)
    h = await make_batcher(max_batch_size=1)
    h.fake.gate.clear()
    busy = asyncio.create_task(submit_as("busy", h.batcher, [1.0]))
    assert await h.fake.next_call() == [1.0]
    with pytest.raises(DeadlineExceeded):
        await submit_as("late", h.batcher, [2.0], deadline=time.monotonic() + 0.05)
    h.fake.gate.set()
    await busy
    [dropped] = [r for r in batcher_records(caplog) if "dropped" in r.getMessage()]
    assert dropped.request_id == "late"  # type: ignore[attr-defined]
    assert "request late dropped (expired)" in dropped.getMessage()
