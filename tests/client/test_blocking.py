"""The blocking client is the asyncio one on an event loop thread: where it can be called, and its thread."""

from __future__ import annotations

import gc
import threading
from collections.abc import Sequence

import numpy as np
import pytest

from service.client import NO_RETRY, ClipClient, RequestFailed
from service.client.connect import Endpoint, connect
from service.client.grpc import GrpcTransport
from service.client.types import Input
from service.protocol.errors import ErrorKind
from tests.grpc.helpers import DIM, LiveServer

TEXTS = [f"thread test {i}" for i in range(20)]


def _loop_threads() -> int:
    return sum(t.name == "clipserve-client" for t in threading.enumerate())


def test_threads_share_one_client_and_closing_stops_its_thread(url: str) -> None:
    before = _loop_threads()
    with ClipClient(url, chunk_size=4) as client:
        expected = client.embed_texts(TEXTS)
        results: list[np.ndarray] = []
        workers = [threading.Thread(target=lambda: results.append(client.embed_texts(TEXTS))) for _ in range(6)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        assert _loop_threads() == before + 1
    assert len(results) == 6 and all(np.array_equal(r, expected) for r in results)
    assert _loop_threads() == before
    with pytest.raises(RuntimeError, match="closed"):
        client.embed_texts(TEXTS)
    client.close()  # again: nothing to do


def test_a_client_never_closed_stops_its_thread_when_collected(url: str) -> None:
    before = _loop_threads()
    ClipClient(url).models()
    gc.collect()
    assert _loop_threads() == before


async def test_it_works_inside_a_running_event_loop(url: str) -> None:
    with ClipClient(url) as client:  # blocks this loop while it waits, but does not need it
        assert client.embed_texts(TEXTS[:3]).shape == (3, DIM)


class CountingTransport:
    """A caller's blocking transport, recording the chunk sizes it was given."""

    def __init__(self, url: str) -> None:
        self.inner = connect(Endpoint(url))
        self.sizes: list[int] = []
        self.closed = False

    def embed(self, inputs: Sequence[Input], model: str | None, timeout_s: float | None) -> np.ndarray:
        self.sizes.append(len(inputs))
        return self.inner.embed(inputs, model, timeout_s)

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def close(self) -> None:
        self.closed = True
        self.inner.close()


def test_a_blocking_transport_of_ones_own(url: str) -> None:
    transport = CountingTransport(url)
    with ClipClient(transport=transport, chunk_size=6, concurrency=3) as client:
        rows = client.embed_texts(TEXTS)
        assert client.transport is transport
    with ClipClient(url) as plain:
        np.testing.assert_array_equal(rows, plain.embed_texts(TEXTS))
        assert plain.transport.models(5)[0].dimension == DIM  # one call, on the client's loop
    assert sorted(transport.sizes) == [2, 6, 6, 6] and transport.closed


def test_unreachable_server_and_an_early_stop_of_a_stream(live: LiveServer) -> None:
    with ClipClient("grpc://127.0.0.1:1", retry=NO_RETRY) as dead, pytest.raises(RequestFailed) as raised:
        dead.models()
    assert raised.value.kind == ErrorKind.UNAVAILABLE
    transport = GrpcTransport(f"127.0.0.1:{live.grpc_port}")
    try:
        stream = transport.embed_stream((str(i), f"caption {i}") for i in range(10_000))
        first = [next(stream) for _ in range(3)]
        stream.close()  # cancels the call
        assert len(first) == 3 and transport.embed(["still usable"], None, 10).shape == (1, DIM)
    finally:
        transport.close()

