"""Splitting long jobs into chunks, running them concurrently (bounded), reading image files, and the progress bar."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from tqdm.auto import tqdm

from service.protocol.image_url import ImageUrl, is_http_url

R = TypeVar("R")
PROGRESS_AUTO_ITEMS = 1000  # progress=None shows a bar for jobs above this many items
# A file path, the encoded image itself, or its URL: an ``ImageUrl``, or a str starting http:// or https://
# (sent as the URL; the server fetches it).
ImageSource = str | Path | bytes | ImageUrl


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


def load_image(source: ImageSource) -> bytes | ImageUrl:
    """The encoded bytes of an image given as bytes or as a file path; a URL as an ``ImageUrl`` (not fetched)."""
    if isinstance(source, bytes | bytearray | memoryview):
        return bytes(source)
    if isinstance(source, ImageUrl):
        return source
    if isinstance(source, str) and is_http_url(source):
        return ImageUrl(source)
    return Path(source).read_bytes()


async def load_images(sources: Sequence[ImageSource]) -> list[bytes | ImageUrl]:
    """``load_image`` of each source; files are read in a worker thread, off the event loop."""
    if all(isinstance(x, bytes | bytearray | memoryview | ImageUrl) for x in sources):
        return [load_image(x) for x in sources]
    return await asyncio.to_thread(lambda: [load_image(x) for x in sources])


async def map_chunks(
    slices: Sequence[slice], fn: Callable[[slice], Awaitable[R]], concurrency: int, bar: Any
) -> list[R]:
    """``fn`` on every slice with at most ``concurrency`` in flight; results in slice order.

    The first error cancels the other chunks and is raised.
    """
    if len(slices) == 1 or concurrency <= 1:  # one at a time: no tasks to schedule
        out = []
        for s in slices:
            out.append(await fn(s))
            bar.update(s.stop - s.start)
        return out
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
