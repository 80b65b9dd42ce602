"""Bridges between blocking and asyncio transports, so that each protocol is written once (asyncio).

- ``BlockingTransport`` is a blocking ``Transport`` over an ``AsyncTransport`` that runs on a
  ``LoopThread``: ``GrpcTransport`` and ``RestTransport`` are the asyncio transports behind it.
- ``ThreadedTransport`` goes the other way: an ``AsyncTransport`` over a caller's blocking
  ``Transport`` (``ClipClient(transport=...)``), each call in a worker thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, TypeVar

import numpy as np

from service.client.loop import LoopThread, closer
from service.client.types import AsyncTransport, ClassifySpec, Image, Input, LabelScore, Similarity, Transport
from service.protocol.model_info import ModelInfo

A = TypeVar("A", bound=AsyncTransport)
T = TypeVar("T")
MAX_THREADS = 64  # a ThreadedTransport's worker threads, started on demand (the client's concurrency bounds use)


async def _call(make: Callable[[], T]) -> T:
    return make()


class BlockingTransport(Generic[A]):
    """A blocking ``Transport`` that runs the asyncio transport ``make()`` returns on an event loop thread.

    ``make`` is called on the loop (asyncio transports are created inside the loop that uses them).
    Without ``loop``, the transport starts a ``LoopThread`` of its own and stops it on ``close`` (or
    when it is garbage-collected); with one, ``close`` closes only the asyncio transport.
    """

    def __init__(self, make: Callable[[], A], loop: LoopThread | None = None) -> None:
        self.loop = loop or LoopThread()
        try:
            self.inner: A = self.loop.run(_call(make))
        except BaseException:
            if loop is None:
                self.loop.close()
            raise
        self._close = closer(self, self.loop, self.inner.close, owns_loop=True) if loop is None else None

    def embed(self, inputs: Sequence[Input], model: str | None, timeout_s: float | None) -> np.ndarray:
        """Embed inputs in one call."""
        return self.loop.run(self.inner.embed(inputs, model, timeout_s))

    def classify(
        self, images: Sequence[Image], spec: ClassifySpec, model: str | None, timeout_s: float | None
    ) -> list[list[LabelScore]]:
        """Classify images in one call."""
        return self.loop.run(self.inner.classify(images, spec, model, timeout_s))

    def similarity(
        self, left: Sequence[Input], right: Sequence[Input], model: str | None, timeout_s: float | None
    ) -> Similarity:
        """Similarity in one call."""
        return self.loop.run(self.inner.similarity(left, right, model, timeout_s))

    def models(self, timeout_s: float | None) -> list[ModelInfo]:
        """The served models."""
        return self.loop.run(self.inner.models(timeout_s))

    def close(self) -> None:
        """Close the connections (and the loop thread, when this transport started it)."""
        if self._close is not None:
            self._close()
        else:
            self.loop.run(self.inner.close())


class ThreadedTransport:
    """An ``AsyncTransport`` over a blocking ``Transport``: each call runs in a worker thread."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self._pool = ThreadPoolExecutor(max_workers=MAX_THREADS, thread_name_prefix="clipserve-transport")

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def embed(self, inputs: Sequence[Input], model: str | None, timeout_s: float | None) -> np.ndarray:
        """Embed inputs in one call."""
        return await self._call(self.transport.embed, inputs, model, timeout_s)

    async def classify(
        self, images: Sequence[Image], spec: ClassifySpec, model: str | None, timeout_s: float | None
    ) -> list[list[LabelScore]]:
        """Classify images in one call."""
        return await self._call(self.transport.classify, images, spec, model, timeout_s)

    async def similarity(
        self, left: Sequence[Input], right: Sequence[Input], model: str | None, timeout_s: float | None
    ) -> Similarity:
        """Similarity in one call."""
        return await self._call(self.transport.similarity, left, right, model, timeout_s)

    async def models(self, timeout_s: float | None) -> list[ModelInfo]:
        """The served models."""
        return await self._call(self.transport.models, timeout_s)

    async def close(self) -> None:
        """Close the wrapped transport, then stop the worker threads."""
        try:
            await self._call(self.transport.close)
        finally:
            self._pool.shutdown(wait=False)
