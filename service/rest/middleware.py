"""Request middleware (pure ASGI): request id, access log and metrics; the request body size limit.

The request id comes from the client's ``X-Request-ID`` (when usable) or is generated; it is set in
``service.logs.REQUEST`` for every log line of the request and echoed in the response header.
Engine calls count themselves in ``clipserve_requests_total`` (route ``embed``, ``classify``,
``similarity``); requests that never reach the engine (health probes, /metrics, validation errors,
oversized bodies) are counted here, labelled by their path template without the leading slash.
"""

from __future__ import annotations

import logging
import time

from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.logs import REQUEST, RequestContext, new_request_id
from service.metrics import Metrics
from service.protocol.headers import REQUEST_ID_HEADER
from service.rest.errors import error_response

access_log = logging.getLogger("clipserve.access")


class RequestContextMiddleware:
    """Sets the request id, echoes it, logs one access line and counts the request."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        ctx = RequestContext(new_request_id(Headers(scope=scope).get(REQUEST_ID_HEADER)))
        token = REQUEST.set(ctx)
        status = 500  # unless a response starts: an exception escaped
        begin = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = ctx.request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            duration = time.perf_counter() - begin
            route = getattr(scope.get("route"), "path", "/unmatched").lstrip("/") or "root"  # / is the playground
            if not ctx.counted:
                self.metrics.requests.labels(route=route, protocol="rest", status=str(status)).inc()
                self.metrics.request_duration.labels(route=route, protocol="rest").observe(duration)
            access_log.info(
                "%s %s %d %.1fms", scope["method"], scope["path"], status, duration * 1000,
                extra={"request_id": ctx.request_id, "method": scope["method"], "path": scope["path"], "route": route,
                       "status": status, "duration_ms": round(duration * 1000, 3)},
            )
            REQUEST.reset(token)


class BodyLimitMiddleware:
    """413 for a body over ``max_bytes``: at once by ``Content-Length``, else while it streams in.

    (FastAPI's own ``max_body_size`` answers in plain text, not in the API's error format.)
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def message(self) -> str:
        """What the client is told."""
        return f"request body is larger than the limit of {self.max_bytes} bytes (max_body_bytes)"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await error_response(413, self.message())(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:  # raised inside body parsing: the error handlers answer
                    raise HTTPException(413, self.message())
            return message

        await self.app(scope, limited_receive, send)
