"""Admission for REST before a body is read: 429 when the engine is saturated or too many bytes are held.

Reading and parsing a body costs memory (the JSON, its strings, the decoded images) and event-loop
time, so a request that would be refused anyway is refused before its body is read:

- when ``max_requests_in_flight`` requests are already in progress (TEI's semaphore: a connection
  costs memory and a file descriptor while it waits, so they are bounded before uvicorn's own
  ``limit_concurrency``, whose 503 has no Retry-After, is reached);
- when the engine's admission is saturated (``max_items_in_flight`` reached, or every model and
  modality with work in flight at its bound), at once;
- when the bodies being read or held by requests in progress, plus this one's ``Content-Length``,
  would pass ``max_body_bytes_in_flight`` (a body without a length is counted as it streams in);
- when more than ``ACCEPT_QUEUE_LIMIT`` connections wait in the listening sockets' accept queue
  (``service.rest.backlog``): the event loop is the bottleneck and work piles up before any counter;
- a body that trickles in slower than ``body_timeout_s`` (from the request's start) gets 408.

Each refusal carries ``Retry-After``. Health probes, ``/metrics`` and other GETs are never refused.
"""

from __future__ import annotations

import asyncio
import time

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.metrics import Metrics
from service.rest.errors import error_response

RETRY_AFTER_S = 1
# Connections waiting in the kernel's accept queue past which requests are refused unread: the event
# loop is behind, and refusing is several times cheaper than serving, so the queue drains.
ACCEPT_QUEUE_LIMIT = 128


class AdmissionMiddleware:
    """Refuses POSTs that cannot be taken now, before reading their bodies; bounds body read time."""

    def __init__(
        self, app: ASGIApp, max_requests_in_flight: int, max_bytes_in_flight: int, body_timeout_s: float,
        metrics: Metrics,
    ) -> None:
        self.app = app
        self.max_requests_in_flight = max_requests_in_flight
        self.requests_in_flight = 0
        self.max_bytes_in_flight = max_bytes_in_flight
        self.body_timeout_s = body_timeout_s
        self.metrics = metrics
        self.bytes_in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        if self.requests_in_flight >= self.max_requests_in_flight:
            message = f"over capacity: {self.requests_in_flight} requests in progress (max_requests_in_flight)"
            await self._refuse(scope, receive, send, "requests", message + "; retry later")
            return
        state = scope["app"].state
        queued = state.accept_queue() if hasattr(state, "accept_queue") else 0
        if queued > ACCEPT_QUEUE_LIMIT:
            message = f"over capacity: {queued} connections wait to be accepted; retry later"
            await self._refuse(scope, receive, send, "accept_queue", message)
            return
        engine = getattr(state, "engine", None)
        if engine is not None and engine.admission.saturated():
            message = "over capacity: the server is saturated (admission bounds); retry later"
            await self._refuse(scope, receive, send, "saturated", message)
            return
        declared = Headers(scope=scope).get("content-length", "")
        held = int(declared) if declared.isdigit() else 0
        if self.bytes_in_flight and self.bytes_in_flight + held > self.max_bytes_in_flight:
            await self._refuse(
                scope, receive, send, "bytes",
                f"over capacity: {self.bytes_in_flight} request body bytes in flight "
                f"(max_body_bytes_in_flight {self.max_bytes_in_flight}); retry later",
            )
            return
        counted = [held]  # this request's bytes in bytes_in_flight
        self.bytes_in_flight += held
        self.requests_in_flight += 1
        try:
            await self.app(scope, self._bounded_receive(receive, counted), send)
        finally:
            self.bytes_in_flight -= counted[0]
            self.requests_in_flight -= 1

    def _bounded_receive(self, receive: Receive, counted: list[int]) -> Receive:
        """``receive`` with the body read timeout; a body of undeclared length counts as it arrives."""
        deadline = time.monotonic() + self.body_timeout_s
        declared = counted[0] > 0
        body_done = False

        async def bounded() -> Message:
            nonlocal body_done
            if body_done:  # after the body only a disconnect can come: wait for it as long as it takes
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                raise HTTPException(
                    408, f"request body not received within {self.body_timeout_s:g} s (body_timeout_s)"
                ) from None
            if message["type"] == "http.request":
                body_done = not message.get("more_body", False)
                if not declared:
                    size = len(message.get("body", b""))
                    counted[0] += size
                    self.bytes_in_flight += size
            return message

        return bounded

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, reason: str, message: str) -> None:
        self.metrics.rejected.labels(model="*", reason=reason).inc()
        headers = {"Retry-After": str(RETRY_AFTER_S)}
        await error_response(429, message, "overloaded", headers)(scope, receive, send)
