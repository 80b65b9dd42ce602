"""Deadlines, cancellation, overload and readiness: the statuses a busy or starting server gives."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.engine import Engine
from service.grpc.server import start_grpc
from service.metrics import Metrics
from service.protocol.generated.clipserve.v1 import clipserve_pb2 as pb
from service.protocol.generated.clipserve.v1 import clipserve_pb2_grpc as pb_grpc
from service.protocol.headers import ERROR_KIND_KEY, RETRY_AFTER_KEY
from tests.grpc.helpers import counter, grpc_server, make_settings, write_model

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _texts(*texts: str) -> pb.EmbedRequest:
    return pb.EmbedRequest(items=[pb.Item(text=t) for t in texts])


def _computed(engine: Engine) -> float:
    return counter(engine, "clipserve_items_embedded_total", model="slow", modality="text")


def _dropped(engine: Engine) -> float:
    return sum(
        counter(engine, "clipserve_dropped_items_total", model="slow", modality="text", reason=r)
        for r in ("expired", "cancelled")
    )


async def _wait_for(condition: object, timeout_s: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout_s
    while not condition():  # type: ignore[operator]
        assert loop.time() < end, "condition not reached in time"
        await asyncio.sleep(0.02)


@pytest.fixture
def slow_repo(tmp_path: Path) -> Path:
    """A model that takes 400 ms per batch."""
    write_model(tmp_path, "slow", options="delay_ms=400")
    return tmp_path


@pytest.fixture
async def busy(tmp_path: Path) -> AsyncIterator[tuple[Engine, pb_grpc.ClipServiceStub, asyncio.Future[Any], float]]:
    """A one-item-per-batch server already computing a 1 s "blocker" call (engine, stub, blocker, count before).

    The second long enough that the calls under test end (deadline, cancel) while the blocker still
    computes, even on a busy machine.
    """
    write_model(tmp_path, "slow", options="delay_ms=1000")
    settings = make_settings(tmp_path, model="slow", max_batch_size=1)
    async with grpc_server(settings) as (engine, handle), grpc.aio.insecure_channel(handle.address) as channel:
        stub = pb_grpc.ClipServiceStub(channel)
        before = _computed(engine)  # the start-up check computed one item
        blocker = asyncio.ensure_future(stub.Embed(_texts("blocker"), timeout=10))
        await _wait_for(lambda: engine.in_flight == 1)
        yield engine, stub, blocker, before


async def test_short_deadline_gives_deadline_exceeded_and_expired_items_are_never_computed(
    busy: tuple[Engine, pb_grpc.ClipServiceStub, asyncio.Future[Any], float],
) -> None:
    engine, stub, blocker, before = busy
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.Embed(_texts("late 1", "late 2", "late 3"), timeout=0.15)
    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert (await blocker).embeddings.rows == 1
    await _wait_for(lambda: engine.in_flight == 0 and _dropped(engine) == 3)
    # One worker, one item per batch, first in first out: a late item still queued or formed ahead
    # would be computed before this call's item.
    assert (await stub.Embed(_texts("after"), timeout=10)).embeddings.rows == 1
    assert _computed(engine) - before == 2  # the blocker and "after": no late item


async def test_client_cancel_reaches_the_engine_and_drops_the_items(
    busy: tuple[Engine, pb_grpc.ClipServiceStub, asyncio.Future[Any], float],
) -> None:
    engine, stub, blocker, before = busy
    call = stub.Embed(_texts("gone 1", "gone 2", "gone 3"), timeout=10)
    await _wait_for(lambda: engine.in_flight == 2)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await _wait_for(lambda: engine.in_flight == 1)  # the handler's engine await was cancelled
    await blocker
    await _wait_for(lambda: engine.in_flight == 0)
    # One worker, one item per batch, first in first out: a cancelled item still queued or formed
    # ahead would be computed before this call's item.
    assert (await stub.Embed(_texts("still serving"), timeout=10)).embeddings.rows == 1
    assert _computed(engine) - before == 2  # the blocker and "still serving": no cancelled item
    assert counter(engine, "clipserve_dropped_items_total", model="slow", modality="text", reason="cancelled") == 3


async def test_full_queue_gives_resource_exhausted_with_a_retry_hint(slow_repo: Path) -> None:
    settings = make_settings(slow_repo, model="slow", max_batch_size=1, queue_size=2)
    async with grpc_server(settings) as (_, handle), grpc.aio.insecure_channel(handle.address) as channel:
        stub = pb_grpc.ClipServiceStub(channel)
        calls = [stub.Embed(_texts(f"t{i}"), timeout=30) for i in range(10)]
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        refused = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
        served = [o for o in outcomes if isinstance(o, pb.EmbedResponse)]
        assert refused and served and len(refused) + len(served) == 10
        for error in refused:
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "over capacity" in (error.details() or "")  # refused at admission, before the batcher's queue
            metadata = dict(error.trailing_metadata() or ())
            assert metadata[ERROR_KIND_KEY] == "overloaded"
            assert float(metadata[RETRY_AFTER_KEY]) > 0


async def test_unavailable_and_not_serving_until_ready_and_while_draining(tmp_path: Path) -> None:
    write_model(tmp_path, "fake")
    settings = make_settings(tmp_path)
    engine = Engine(settings, Metrics())
    handle = await start_grpc(engine, settings, host="127.0.0.1", port=0)
    assert handle is not None
    try:
        async with grpc.aio.insecure_channel(handle.address) as channel:
            stub = pb_grpc.ClipServiceStub(channel)
            health = health_pb2_grpc.HealthStub(channel)
            check = health_pb2.HealthCheckRequest
            assert (await health.Check(check(service=""))).status == NOT_SERVING
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stub.Embed(_texts("early"), timeout=5)
            assert raised.value.code() == grpc.StatusCode.UNAVAILABLE and "not ready" in raised.value.details()

            await engine.start()
            assert (await health.Check(check(service=""))).status == SERVING
            assert (await health.Check(check(service="clipserve.v1.ClipService"))).status == SERVING
            assert (await stub.Embed(_texts("now"), timeout=5)).embeddings.rows == 1

            engine.begin_drain()
            assert (await health.Check(check(service=""))).status == NOT_SERVING
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stub.Embed(_texts("late"), timeout=5)
            assert raised.value.code() == grpc.StatusCode.UNAVAILABLE and "shutting down" in raised.value.details()
    finally:
        await handle.stop(0.5)
        await engine.stop(0.5)
