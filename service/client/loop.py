"""A private asyncio event loop in a daemon thread: how blocking code runs the asyncio client.

The asyncio client and transports are the one implementation; ``ClipClient``, ``GrpcTransport`` and
``RestTransport`` each own a ``LoopThread`` and run their asyncio counterparts' coroutines on it.
Because the loop is private, a blocking call works from any thread, also from inside another running
event loop (a notebook, say), and several threads may call at once (the calls run concurrently).
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

T = TypeVar("T")
CLOSE_TIMEOUT_S = 10.0  # the longest a finalizer waits for connections to close
_DONE: Any = object()  # end of an async iterator, passed back from the loop thread


async def _next(iterator: AsyncIterator[T]) -> T:
    try:
        return await iterator.__anext__()
    except StopAsyncIteration:
        return _DONE


def _cancel_all(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel the tasks still on ``loop`` and let them finish (the loop is stopped)."""
    tasks = asyncio.all_tasks(loop)
    for task in tasks:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))


class LoopThread:
    """An event loop running in a daemon thread of its own, and blocking ways to use it.

    >>> loop = LoopThread()
    >>> loop.run(asyncio.sleep(0, "done"))
    'done'
    >>> loop.close()
    """

    def __init__(self, name: str = "clipserve-client") -> None:
        self._loop = asyncio.new_event_loop()
        self._closed = False
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
        finally:
            try:
                _cancel_all(self._loop)
                self._loop.run_until_complete(self._loop.shutdown_asyncgens())
                self._loop.run_until_complete(self._loop.shutdown_default_executor())
            finally:
                asyncio.set_event_loop(None)
                self._loop.close()

    @property
    def closed(self) -> bool:
        """True once ``close`` was called."""
        return self._closed

    @property
    def in_loop_thread(self) -> bool:
        """True when called from the loop's own thread (where a blocking call would deadlock)."""
        return threading.current_thread() is self._thread

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float | None = None) -> T:
        """Run ``coro`` on the loop and wait for its result (or error). Interrupted, it cancels ``coro``."""
        if self._closed or self.in_loop_thread:
            coro.close()
            raise RuntimeError("the client is closed" if self._closed else "blocking call from its own event loop")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout_s)
        except FutureTimeout:
            future.cancel()
            raise TimeoutError(f"no result in {timeout_s} s") from None
        except BaseException:  # KeyboardInterrupt, say: stop the work too
            future.cancel()
            raise

    def iterate(self, iterator: AsyncIterator[T]) -> Iterator[T]:
        """Iterate an async iterator from this thread; stopping early closes it on the loop."""
        try:
            while (item := self.run(_next(iterator))) is not _DONE:
                yield item
        finally:
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None and not self._closed and not self.in_loop_thread:
                self.run(aclose())  # (collected on the loop's thread, asyncio's async generator hooks close it)

    def close(self) -> None:
        """Cancel what still runs, stop the loop and wait for its thread. Calling it again does nothing."""
        if self._closed:
            return
        self._closed = True
        self._loop.call_soon_threadsafe(self._loop.stop)
        if not self.in_loop_thread:
            self._thread.join()


def _finalize(loop: LoopThread, aclose: Callable[[], Coroutine[Any, Any, Any]], owns_loop: bool) -> None:
    try:
        if not loop.closed and not loop.in_loop_thread:
            loop.run(aclose(), CLOSE_TIMEOUT_S)
    finally:
        if owns_loop:
            loop.close()


def closer(
    owner: object, loop: LoopThread, aclose: Callable[[], Coroutine[Any, Any, Any]], *, owns_loop: bool
) -> weakref.finalize:
    """Call it to close ``owner``: awaits ``aclose()`` on ``loop``, then closes the loop when ``owns_loop``.

    It runs once: when called, else when ``owner`` is garbage-collected or the interpreter exits, so a
    client that is never closed does not leave its thread behind. ``aclose`` must not refer to ``owner``.
    """
    return weakref.finalize(owner, _finalize, loop, aclose, owns_loop)
