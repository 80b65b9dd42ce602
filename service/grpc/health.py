"""grpc.health.v1 reflecting the engine's readiness: SERVING when ready, NOT_SERVING otherwise.

``Check`` reads readiness at call time; a small poll keeps ``Watch`` streams up to date. On
shutdown every service turns NOT_SERVING for good.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence

import grpc
from grpc_health.v1 import health, health_pb2

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class ReadinessHealthServicer(health.aio.HealthServicer):  # type: ignore[misc]
    """The standard health servicer, with its status taken from a readiness callable."""

    def __init__(self, ready: Callable[[], bool], services: Sequence[str], poll_s: float = 0.5) -> None:
        super().__init__()
        self._ready = ready
        self._services = ("", *services)
        self._poll_s = poll_s
        self._poller: asyncio.Task[None] | None = None

    async def refresh(self) -> None:
        """Set every service's status from the readiness callable now."""
        status = SERVING if self._ready() else NOT_SERVING
        for service in self._services:
            await self.set(service, status)

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthCheckResponse:
        """The current status of ``request.service`` ("" for the whole server)."""
        await self.refresh()
        return await super().Check(request, context)

    async def _poll(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(self._poll_s)

    async def start(self) -> None:
        """Set the statuses now and keep them current for watchers."""
        await self.refresh()
        self._poller = asyncio.create_task(self._poll())

    async def shutdown(self) -> None:
        """Stop polling and report NOT_SERVING for every service from now on."""
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        await self.enter_graceful_shutdown()
