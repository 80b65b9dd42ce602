"""EmbedStream: bulk embedding matched by id, per-item errors, and the bounded in-flight window."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from service.engine import EmbedResult, Engine, Item
from service.grpc.server import GrpcServer, stream_window
from service.grpc.stream import EmbedStreamer
from service.protocol.generated.clipserve.v1 import clipserve_pb2 as pb
from service.protocol.generated.clipserve.v1 import clipserve_pb2_grpc as pb_grpc
from service.protocol.wire import matrix_from_pb, vector_from_bytes
from tests.grpc.helpers import DIM, encoded_image, grpc_server, make_settings, write_model

N_ITEMS = 1200


def _item(i: int, images: Sequence[bytes]) -> pb.Item:
    return pb.Item(image=images[i % len(images)]) if i % 3 == 0 else pb.Item(text=f"item number {i}")


async def test_stream_of_1200_items_matches_every_result_to_its_input(
    stub: pb_grpc.ClipServiceStub, server: tuple[Engine, GrpcServer]
) -> None:
    images = [encoded_image(i) for i in range(8)]
    items = [_item(i, images) for i in range(N_ITEMS)]

    async def requests() -> AsyncIterator[pb.EmbedStreamRequest]:
        for i, item in enumerate(items):
            yield pb.EmbedStreamRequest(id=f"id-{i}", item=item)

    got: dict[str, np.ndarray] = {}
    async for response in stub.EmbedStream(requests()):
        assert response.WhichOneof("result") == "embedding", response.error.message
        assert response.id not in got
        got[response.id] = vector_from_bytes(response.embedding)
    assert set(got) == {f"id-{i}" for i in range(N_ITEMS)}
    # The same items through unary Embed (in chunks): every streamed row belongs to its own input.
    expected = np.concatenate([
        matrix_from_pb((await stub.Embed(pb.EmbedRequest(items=items[i : i + 64]))).embeddings)
        for i in range(0, N_ITEMS, 64)
    ])
    streamed = np.stack([got[f"id-{i}"] for i in range(N_ITEMS)])
    assert streamed.shape == (N_ITEMS, DIM)
    np.testing.assert_array_equal(streamed, expected)


async def test_a_bad_item_gets_an_error_for_its_id_and_the_stream_goes_on(stub: pb_grpc.ClipServiceStub) -> None:
    requests = [
        pb.EmbedStreamRequest(id="good-1", item=pb.Item(text="fine")),
        pb.EmbedStreamRequest(id="broken", item=pb.Item(image=b"definitely not an image")),
        pb.EmbedStreamRequest(id="empty", item=pb.Item()),
        pb.EmbedStreamRequest(id="no-model", item=pb.Item(text="x"), model="nope"),
        pb.EmbedStreamRequest(id="good-2", item=pb.Item(image=encoded_image(3))),
    ]
    results = {r.id: r async for r in stub.EmbedStream(iter(requests))}
    assert results["good-1"].WhichOneof("result") == results["good-2"].WhichOneof("result") == "embedding"
    invalid = grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert results["broken"].error.code == invalid
    assert results["broken"].error.message.startswith("item 'broken': not an image")
    assert results["empty"].error.code == invalid
    assert results["empty"].error.message == "item 'empty': set one of text, image or image_url"
    assert results["no-model"].error.code == grpc.StatusCode.NOT_FOUND.value[0]
    assert "nope" in results["no-model"].error.message


class _CountingEngine:
    """The real engine, counting how many embed calls are in flight at once."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.now = 0
        self.peak = 0
        self.calls = 0

    async def embed(self, items: Sequence[Item], **kwargs: Any) -> EmbedResult:
        self.now += 1
        self.calls += 1
        self.peak = max(self.peak, self.now)
        try:
            return await self.engine.embed(items, **kwargs)
        finally:
            self.now -= 1


async def test_the_window_bounds_items_in_flight_on_a_slow_model(tmp_path: Path) -> None:
    write_model(tmp_path, "slow", options="delay_ms=20")
    settings = make_settings(tmp_path, model="slow", max_batch_size=4)
    window = stream_window(settings)
    assert window == 8
    async with grpc_server(settings) as (engine, _):
        counting = _CountingEngine(engine)
        streamer = EmbedStreamer(counting, window=window)  # type: ignore[arg-type]
        read = 0

        async def requests() -> AsyncIterator[pb.EmbedStreamRequest]:
            nonlocal read
            for i in range(100):
                read += 1
                yield pb.EmbedStreamRequest(id=str(i), item=pb.Item(text=f"t{i}"))

        ids = []
        async for response in streamer.run(requests(), lambda: 30.0):
            ids.append(response.id)
            assert read - len(ids) <= window + 1  # the reader stops while the window is full
        assert sorted(ids, key=int) == [str(i) for i in range(100)]
        assert counting.calls == 100
        assert 1 < counting.peak <= window


async def test_cancelling_a_stream_cancels_its_pending_items(tmp_path: Path) -> None:
    write_model(tmp_path, "slow", options="delay_ms=500")
    settings = make_settings(tmp_path, model="slow", max_batch_size=1)
    async with grpc_server(settings) as (engine, handle), grpc.aio.insecure_channel(handle.address) as channel:
        stub = pb_grpc.ClipServiceStub(channel)
        call = stub.EmbedStream(iter([pb.EmbedStreamRequest(id=str(i), item=pb.Item(text=f"x{i}")) for i in range(20)]))
        first = await call.read()
        assert first.WhichOneof("result") == "embedding"
        call.cancel()
        for _ in range(100):  # the server notices the cancel and drops the queued items
            if engine.in_flight == 0:
                break
            await asyncio.sleep(0.05)
        assert engine.in_flight == 0
        computed = engine.metrics.registry.get_sample_value(
            "clipserve_items_embedded_total", {"model": "slow", "modality": "text"}
        )
        assert computed is not None and computed <= 2 + stream_window(settings)  # far fewer than the 20 sent


async def test_a_stream_past_its_deadline_ends_with_deadline_exceeded(tmp_path: Path) -> None:
    write_model(tmp_path, "slow", options="delay_ms=500")
    settings = make_settings(tmp_path, model="slow", max_batch_size=1)
    async with grpc_server(settings) as (engine, handle), grpc.aio.insecure_channel(handle.address) as channel:
        stub = pb_grpc.ClipServiceStub(channel)
        requests = [pb.EmbedStreamRequest(id=str(i), item=pb.Item(text=f"d{i}")) for i in range(6)]
        call = stub.EmbedStream(iter(requests), timeout=0.3)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            async for _ in call:
                pass
        assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        for _ in range(100):
            if engine.in_flight == 0:
                break
            await asyncio.sleep(0.05)
        assert engine.in_flight == 0  # the stream's pending items were dropped
        assert (await stub.Embed(pb.EmbedRequest(items=[pb.Item(text="after")]), timeout=10)).embeddings.rows == 1
