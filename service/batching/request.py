"""The batcher's bookkeeping: one pending request, its items, and how compute results are checked."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from service.errors import ClipServeError, InferenceError


@dataclass(eq=False)
class Request:
    """One ``submit`` call: its future, deadline and the result rows gathered so far.

    The request is live while its future is not done; once done (result, error, cancellation)
    its items that were not computed yet are skipped.
    """

    size: int
    future: asyncio.Future[np.ndarray]
    deadline: float | None  # time.monotonic() value
    submitted: float  # time.monotonic() at submit
    request_id: str = "-"  # the id of the client request that submitted it (service.logs.REQUEST), for log lines
    rows: np.ndarray | None = None
    filled: int = 0
    drop_reason: str | None = None  # "expired" | "cancelled" once dropped

    @property
    def live(self) -> bool:
        """True while the request still waits for rows."""
        return not self.future.done()

    def expired(self, now: float) -> bool:
        """True when the deadline has passed."""
        return self.deadline is not None and now >= self.deadline

    def accept(self, index: int, row: np.ndarray) -> None:
        """Store the row of item ``index``; resolve the future once every row is in."""
        if not self.live:
            return
        if self.rows is None:
            self.rows = np.empty((self.size, *row.shape), dtype=row.dtype)
        try:
            self.rows[index] = row
        except ValueError:  # a worker returned rows of another width than an earlier batch
            self.fail(InferenceError(f"inconsistent embedding shape {row.shape} vs {self.rows.shape[1:]}"))
            return
        self.filled += 1
        if self.filled == self.size:
            self.future.set_result(self.rows)

    def fail(self, error: BaseException) -> None:
        """End the request with ``error`` unless it is already done."""
        if self.live:
            self.future.set_exception(error)


class QueuedItem(NamedTuple):
    """One payload of a request and its position in that request."""

    request: Request
    position: int
    payload: Any


def request_ids(items: Iterable[QueuedItem]) -> list[str]:
    """The distinct request ids of ``items``, in order of first appearance."""
    return list(dict.fromkeys(item.request.request_id for item in items))


def client_error(exc: BaseException, model: str, modality: str) -> ClipServeError:
    """The error a request gets when compute raised ``exc``: ClipServeErrors pass through as is."""
    if isinstance(exc, ClipServeError):
        return exc
    return InferenceError(f"inference failed for model {model!r} ({modality}): {type(exc).__name__}")


def check_rows(rows: Any, count: int, model: str, modality: str) -> np.ndarray:
    """``rows`` as an (count, D) array, or InferenceError when compute returned another shape."""
    array = np.asarray(rows)
    if array.ndim != 2 or array.shape[0] != count:
        raise InferenceError(
            f"inference failed for model {model!r} ({modality}): compute returned shape {array.shape} "
            f"for {count} items"
        )
    return array
