"""Cancel an engine call when its HTTP client goes away, so the batcher drops its queued items."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any, TypeVar

from starlette.requests import Request

from service.errors import Cancelled

T = TypeVar("T")


async def _disconnected(request: Request) -> None:
    """Return once the client has disconnected (the body is already read: nothing else arrives)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def unless_disconnected(request: Request, call: Coroutine[Any, Any, T]) -> T:
    """Await ``call``; if the client disconnects first, cancel it and raise ``Cancelled`` (499)."""
    work = asyncio.ensure_future(call)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({work, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not work.done():
            work.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.gather(work, watcher, return_exceptions=True)
    if work.cancelled():
        raise Cancelled("the client disconnected before the answer was ready")
    return work.result()
