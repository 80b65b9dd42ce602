"""Memory handed back to the system: fewer glibc malloc arenas, and trimming once the server is idle.

glibc gives each thread that allocates its own arena (up to 8 per core) and keeps freed memory in
them, so after a burst of large requests the resident size stays near its peak. ``limit_arenas``
caps the arenas (as ``MALLOC_ARENA_MAX`` would); ``trim_when_idle`` returns the free memory at the
top of the heaps (``malloc_trim``) when the server has been busy and is idle again. Both do nothing
where the C library is not glibc.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import functools
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)
M_ARENA_MAX = -8  # glibc's mallopt parameter number


@functools.cache  # find_library runs ldconfig: once per process, not at every trim
def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None


def limit_arenas(count: int) -> bool:
    """Cap glibc's malloc arenas at ``count`` (0: leave the default); True when applied."""
    libc = _glibc()
    if count <= 0 or libc is None:
        return False
    return bool(libc.mallopt(M_ARENA_MAX, count))


def trim() -> bool:
    """Give the free memory of every heap back to the system; True when some was released."""
    libc = _glibc()
    return bool(libc.malloc_trim(0)) if libc is not None else False


async def trim_when_idle(busy: Callable[[], int], interval_s: float = 2.0) -> None:
    """Every ``interval_s``: after work, once ``busy()`` is 0, trim (in a thread). Runs until cancelled."""
    if _glibc() is None:
        return
    worked = False
    while True:
        await asyncio.sleep(interval_s)
        if busy():
            worked = True
        elif worked:
            worked = False
            released = await asyncio.to_thread(trim)
            log.debug("idle: malloc_trim released memory: %s", released)
