"""Overload is shed at the door: 429 with Retry-After, before bodies are read or images decoded."""

from __future__ import annotations

import asyncio
import socket
import threading
from pathlib import Path

import httpx

from service.engine import Engine, ImageItem
from service.metrics import Metrics
from service.rest.admission import ACCEPT_QUEUE_LIMIT
from service.rest.backlog import accept_queue, accept_queue_probe
from tests.api.helpers import b64, make_settings, photo, serve, write_model


def embed_body(images: int, seed: int = 0) -> dict[str, object]:
    return {"inputs": [{"image": b64(photo(seed + i))} for i in range(images)]}


async def wait_for(predicate: object, timeout_s: float = 20.0) -> None:
    """Poll a state until it holds (each poll yields to the event loop)."""
    assert callable(predicate)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        assert loop.time() < deadline, "state not reached in time"
        await asyncio.sleep(0.01)


async def test_admission_bound_turns_excess_into_429_with_retry_after(tmp_path: Path) -> None:
    write_model(tmp_path, "slow", weights="delay_ms=400")
    settings = make_settings(tmp_path, model="slow", max_batch_size=1, queue_size=4, warmup=False)
    async with serve(settings) as client:
        engine: Engine = client._transport.app.state.engine  # type: ignore[attr-defined]
        first = asyncio.create_task(client.post("/embed", json=embed_body(3)))
        await wait_for(lambda: engine.admission.total == 3)
        refused = await client.post("/embed", json=embed_body(3, seed=10))  # 3 + 3 > bound 4
        small = asyncio.create_task(client.post("/embed", json=embed_body(1, seed=20)))  # 3 + 1 fits
        answered = await first
        assert (await small).status_code == 200
    assert answered.status_code == 200, answered.text
    assert refused.status_code == 429, refused.text
    assert int(refused.headers["retry-after"]) >= 1
    body = refused.json()["error"]
    assert body["type"] == "overloaded" and "3 image items in flight" in body["message"]
    assert "model 'slow'" in body["message"]


async def test_saturated_server_refuses_before_reading_the_body(tmp_path: Path) -> None:
    write_model(tmp_path, "slow", weights="delay_ms=400")
    settings = make_settings(tmp_path, model="slow", max_batch_size=1, max_items_in_flight=2, warmup=False)
    async with serve(settings) as client:
        engine: Engine = client._transport.app.state.engine  # type: ignore[attr-defined]
        busy = asyncio.create_task(client.post("/embed", json=embed_body(2)))
        await wait_for(lambda: engine.admission.saturated())
        read = threading.Event()

        async def body() -> object:  # a body whose reading shows: it must never be read
            read.set()
            yield b'{"inputs": [{"text": "never read"}]}'

        refused = await client.post("/embed", content=body(), headers={"content-type": "application/json"})
        assert (await busy).status_code == 200
    assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
    assert "server is saturated" in refused.json()["error"]["message"]
    assert not read.is_set()


async def test_bytes_in_flight_past_the_bound_are_refused(tmp_path: Path) -> None:
    write_model(tmp_path, "slow", weights="delay_ms=400")
    first = embed_body(1)
    size = len(httpx.Request("POST", "http://x", json=first).content)
    settings = make_settings(tmp_path, model="slow", max_body_bytes_in_flight=size + 10, warmup=False)
    async with serve(settings) as client:
        engine: Engine = client._transport.app.state.engine  # type: ignore[attr-defined]
        held = asyncio.create_task(client.post("/embed", json=first))
        await wait_for(lambda: engine.admission.total == 1)  # its body read and held
        refused = await client.post("/embed", json=embed_body(1, seed=5))
        assert (await held).status_code == 200
        after = await client.post("/embed", json=embed_body(1, seed=6))  # released: taken again
    assert refused.status_code == 429 and "max_body_bytes_in_flight" in refused.json()["error"]["message"]
    assert after.status_code == 200


async def test_labels_times_templates_2000_x_2000_is_refused_naming_the_limit(model_dir: Path) -> None:
    labels = [f"label {i}" for i in range(2000)]
    templates = [f"{{}} in style {i}" for i in range(2000)]
    async with serve(make_settings(model_dir)) as client:
        answer = await client.post("/classify", json={"images": [b64(photo(1))], "labels": labels,
                                                      "templates": templates})
    assert answer.status_code == 413, answer.text
    message = answer.json()["error"]["message"]
    assert "2000 labels x 2000 templates = 4000000 prompts" in message and "max_prompts" in message


async def test_a_cancelled_request_drops_its_queued_preprocessing_jobs(model_dir: Path) -> None:
    engine = Engine(make_settings(model_dir, preprocess_threads=1), Metrics())
    await engine.start()
    served = engine._model(None)
    entered, release = threading.Event(), threading.Event()
    calls: list[int] = []
    original = served.preprocess

    def blocking_preprocess(data: bytes) -> object:
        calls.append(len(data))
        entered.set()
        release.wait(30)
        return original(data)

    served.preprocess = blocking_preprocess  # type: ignore[method-assign]
    try:
        request = asyncio.create_task(engine.embed([ImageItem(photo(i)) for i in range(6)]))
        await asyncio.to_thread(entered.wait, 30)  # the first job runs; five wait in the pool's queue
        request.cancel()  # what the REST front end does when the client disconnects
        await asyncio.gather(request, return_exceptions=True)
        release.set()
        await asyncio.get_running_loop().run_in_executor(engine._pool, lambda: None)  # after every queued job
        assert request.cancelled()
        assert len(calls) == 1  # the five queued jobs never ran
        assert engine.admission.total == 0  # its items left the admission count
    finally:
        release.set()
        await engine.stop(1.0)


def test_accept_queue_reads_the_kernels_count_of_waiting_connections() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        clients = [socket.create_connection(listener.getsockname()) for _ in range(5)]
        try:
            assert accept_queue(listener) == 5
            listener.accept()[0].close()
            assert accept_queue_probe([listener])() == 4
        finally:
            for client in clients:
                client.close()


async def test_a_long_accept_queue_refuses_requests_unread(model_dir: Path) -> None:
    async with serve(make_settings(model_dir)) as client:
        state = client._transport.app.state  # type: ignore[attr-defined]
        state.accept_queue = lambda: ACCEPT_QUEUE_LIMIT + 1  # what the kernel says when the loop is behind
        refused = await client.post("/embed", json={"inputs": [{"text": "a"}]})
        health = await client.get("/readyz")
        state.accept_queue = lambda: 0
        served = await client.post("/embed", json={"inputs": [{"text": "a"}]})
    assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
    assert "connections wait to be accepted" in refused.json()["error"]["message"]
    assert health.status_code == 200 and served.status_code == 200  # probes are never refused
