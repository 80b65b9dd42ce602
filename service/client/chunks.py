"""Splitting long jobs into chunks, running them concurrently (bounded), and the progress bar."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, TypeVar

from tqdm.auto import tqdm

R = TypeVar("R")
PROGRESS_AUTO_ITEMS = 1000  # progress=None shows a bar for jobs above this many items
ImageSource = str | Path | bytes  # a file path, or the encoded image itself


def chunk_slices(n: int, size: int) -> list[slice]:
    """Consecutive slices of at most ``size`` covering ``range(n)``."""
    if size < 1:
        raise ValueError(f"chunk size must be at least 1, got {size}")
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def want_progress(progress: bool | None, n: int) -> bool:
    """True: always; False: never; None: for jobs above ``PROGRESS_AUTO_ITEMS`` items."""
    return n > PROGRESS_AUTO_ITEMS if progress is None else progress


def progress_bar(n: int, show: bool, desc: str) -> Any:
    """A tqdm bar over ``n`` items on stderr (a disabled one when ``show`` is False)."""
    return tqdm(total=n, desc=desc, unit="item", disable=not show, file=sys.stderr, dynamic_ncols=True)


def load_image(source: ImageSource) -> bytes:
    """The encoded bytes of an image given as bytes or as a file path."""
    if isinstance(source, bytes | bytearray | memoryview):
        return bytes(source)
    return Path(source).read_bytes()


def run_chunks(slices: Sequence[slice], fn: Callable[[slice], R], concurrency: int, bar: Any) -> list[R]:
    """``fn`` on every slice with at most ``concurrency`` threads; results in slice order.

    The first error cancels the chunks that have not started and is raised.
    """
    if len(slices) == 1 or concurrency <= 1:
        out = []
        for s in slices:
            out.append(fn(s))
            bar.update(s.stop - s.start)
        return out

    def tracked(s: slice) -> R:
        result = fn(s)
        bar.update(s.stop - s.start)
        return result

    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="clipserve-client")
    try:
        futures = [pool.submit(tracked, s) for s in slices]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        for future in futures:
            if future in done and future.exception() is not None:
                raise future.exception()  # type: ignore[misc]
        return [future.result() for future in futures]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


async def arun_chunks(
    slices: Sequence[slice], fn: Callable[[slice], Awaitable[R]], concurrency: int, bar: Any
) -> list[R]:
    """``fn`` on every slice with at most ``concurrency`` in flight; results in slice order.

    The first error cancels the other chunks and is raised.
    """
    gate = asyncio.Semaphore(max(1, concurrency))

    async def tracked(s: slice) -> R:
        async with gate:
            result = await fn(s)
        bar.update(s.stop - s.start)
        return result

    tasks = [asyncio.ensure_future(tracked(s)) for s in slices]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in tasks:
            if task in done and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        return [task.result() for task in tasks]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
