"""Retry with exponential backoff and full jitter, honouring the server's Retry-After.

Only ``RequestFailed`` errors whose ``retryable`` is True are retried (overload and unavailability:
HTTP 429/503, gRPC RESOURCE_EXHAUSTED for a full queue, UNAVAILABLE). The wait before retry n
(n = 1, 2, ...) is uniform in [0, min(max_delay_s, base_delay_s * 2**(n-1))], but never shorter
than the server's Retry-After when it sent one.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from service.client.errors import RequestFailed

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry a refused call."""

    max_attempts: int = 6  # including the first try; 1 turns retries off
    base_delay_s: float = 0.1
    max_delay_s: float = 10.0
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def delay(self, retry: int, retry_after_s: float | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (1-based)."""
        cap = min(self.max_delay_s, self.base_delay_s * 2 ** (retry - 1))
        wait = self.rng.uniform(0.0, cap)
        if retry_after_s is not None:
            wait = max(wait, min(retry_after_s, self.max_delay_s))
        return wait

    def should_retry(self, error: BaseException, attempt: int) -> bool:
        """Whether to try again after ``error`` ended try number ``attempt`` (1-based)."""
        return isinstance(error, RequestFailed) and error.retryable and attempt < self.max_attempts


NO_RETRY = RetryPolicy(max_attempts=1)


class Tries:
    """The retry decision both loops below share: it counts tries, logs, and draws each wait."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.attempt = 1

    def wait_after(self, error: RequestFailed) -> float | None:
        """Seconds to wait before the next try after ``error``; None when the caller should raise it."""
        if not self.policy.should_retry(error, self.attempt):
            return None
        wait = self.policy.delay(self.attempt, error.retry_after_s)
        log.info("retrying in %.2fs after %s (try %d of %d)", wait, error, self.attempt, self.policy.max_attempts)
        self.attempt += 1
        return wait


async def acall_with_retry(fn: Callable[[], Awaitable[T]], policy: RetryPolicy) -> T:
    """Await ``fn()`` (called anew for each try) until it succeeds, a non-retryable error occurs, or the tries
    run out. The clients retry each call this way."""
    tries = Tries(policy)
    while True:
        try:
            return await fn()
        except RequestFailed as error:
            if (wait := tries.wait_after(error)) is None:
                raise
        await asyncio.sleep(wait)


def call_with_retry(fn: Callable[[], T], policy: RetryPolicy) -> T:
    """``acall_with_retry`` for a blocking ``fn`` (sleeping with ``time.sleep``), for callers of a blocking
    ``Transport`` of their own."""
    tries = Tries(policy)
    while True:
        try:
            return fn()
        except RequestFailed as error:
            if (wait := tries.wait_after(error)) is None:
                raise
        time.sleep(wait)
