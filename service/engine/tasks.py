"""asyncio helpers the engine is built on: deadlines and gathering that cancels the rest on error."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Any


def remaining(deadline: float) -> float:
    """Seconds left until a ``time.monotonic()`` deadline (never negative)."""
    return max(0.0, deadline - time.monotonic())


async def gather_or_cancel(*aws: Awaitable[Any]) -> list[Any]:
    """Run awaitables concurrently; on the first error cancel the others and raise it."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    except asyncio.CancelledError:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    if pending:
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    errors = [task.exception() for task in tasks if not task.cancelled()]  # retrieves every one
    first = next((error for error in errors if error is not None), None)
    if first is not None:
        raise first
    return [task.result() for task in tasks]
