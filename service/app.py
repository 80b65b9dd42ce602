"""The app factory: ``create_app(settings)`` builds the FastAPI app whose lifespan runs the engine.

Startup loads and warms every configured model (``Engine.start``) and, when ``grpc_port`` is set,
starts the gRPC server on the same engine and event loop (``service.grpc.server.start_grpc``);
only then does uvicorn accept connections and ``/readyz`` answer 200. Shutdown stops gRPC (with
the drain timeout as grace), then drains and stops the engine.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Protocol

from fastapi import FastAPI
from fastapi.telemetry import TelemetryConfig

from service import __version__
from service.api.errors import install_error_handlers
from service.api.middleware import BodyLimitMiddleware, RequestContextMiddleware
from service.api.routes import classify, embed, health, models, similarity
from service.config import Settings
from service.engine import Engine
from service.metrics import Metrics

log = logging.getLogger(__name__)

DESCRIPTION = """CLIP embeddings, similarity and zero-shot labels over REST (and gRPC).

Errors have the body `{"error": {"type": ..., "message": ...}}`; see docs/api.md."""


class StoppableServer(Protocol):
    """What ``start_grpc`` returns: a started server that stops with a grace period (grpc.aio.Server)."""

    async def stop(self, grace: float | None) -> None: ...


async def start_grpc_server(engine: Engine, settings: Settings) -> StoppableServer | None:
    """Start the gRPC server beside REST when ``settings.grpc_port`` is set and the module exists."""
    if not settings.grpc_port:
        return None
    try:
        from service.grpc.server import start_grpc
    except ModuleNotFoundError as exc:
        if exc.name not in ("service.grpc.server", "service.grpc"):
            raise
        log.warning("grpc_port=%d but service.grpc.server is not available: serving REST only", settings.grpc_port)
        return None
    server: StoppableServer | None = await start_grpc(engine, settings)
    return server


# FastAPI's native OpenTelemetry hooks, off: clipserve exports Prometheus metrics (service.metrics). Hot
# path, measured (server CPU per one-text request, fake model, c=16, as benchmarks/bench_overhead.py
# measures it): 1.50 -> 1.37 ms; its per-request provider lookups ran even with no OpenTelemetry SDK.
NO_OTEL: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False, "operation_spans": False}


def create_app(settings: Settings | None = None) -> FastAPI:
    """A FastAPI app serving ``settings`` (default: from the environment)."""
    settings = settings or Settings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = Engine(settings, metrics)
        app.state.engine = engine
        grpc_server = None
        try:
            await engine.start()
            grpc_server = await start_grpc_server(engine, settings)
            app.state.grpc_server = grpc_server
            yield
        finally:
            engine.begin_drain()
            if grpc_server is not None:
                await grpc_server.stop(settings.drain_timeout_s)
            await engine.stop(settings.drain_timeout_s)

    app = FastAPI(
        title="clipserve", version=__version__, description=DESCRIPTION, lifespan=lifespan, telemetry=NO_OTEL,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestContextMiddleware, metrics=metrics)  # added last: outermost
    install_error_handlers(app)
    for module in (embed, classify, similarity, models, health):
        app.include_router(module.router)
    return app
