"""The app factory: ``create_app(settings, engine=...)`` builds the REST front end over an engine.

``service.server`` starts the engine, then serves this app (uvicorn) and gRPC beside it as peers;
``/readyz`` answers 200 once the engine is ready and 503 while it drains.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.telemetry import TelemetryConfig

from service import __version__
from service.config import Settings
from service.engine import Engine
from service.metrics import Metrics
from service.rest.admission import AdmissionMiddleware
from service.rest.errors import install_error_handlers
from service.rest.middleware import BodyLimitMiddleware, RequestContextMiddleware
from service.rest.routes import classify, docs, embed, health, models, openai, similarity
from service.rest.routes.openapi import document_settings
from service.rest.routes.playground import install as install_playground

log = logging.getLogger(__name__)

DESCRIPTION = """CLIP embeddings, similarity and zero-shot labels over REST (and gRPC).

Errors have the body `{"error": {"type": ..., "message": ...}}`; see docs/api.md."""


# FastAPI's native OpenTelemetry hooks, off: clipserve exports Prometheus metrics (service.metrics). Hot
# path, measured (server CPU per one-text request, fake model, c=16, as benchmarks/bench_overhead.py
# measures it): 1.50 -> 1.37 ms; its per-request provider lookups ran even with no OpenTelemetry SDK.
NO_OTEL: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False, "operation_spans": False}


def create_app(
    settings: Settings | None = None, *, engine: Engine | None = None, metrics: Metrics | None = None
) -> FastAPI:
    """The REST app over ``engine`` (started and stopped by its owner, ``service.server``).

    Without an engine the app owns one: its lifespan starts the engine and stops it (tests, and
    embedding the app in another ASGI server).
    """
    settings = settings or Settings()
    metrics = metrics or (engine.metrics if engine is not None else Metrics())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if engine is not None:
            app.state.engine = engine
            yield
            return
        owned = Engine(settings, metrics)
        app.state.engine = owned
        try:
            await owned.start()
            yield
        finally:
            await owned.stop(settings.drain_timeout_s)

    app = FastAPI(
        title="clipserve", version=__version__, description=DESCRIPTION, lifespan=lifespan, telemetry=NO_OTEL,
        docs_url=None, redoc_url=None,  # FastAPI's load their files from a CDN: service.rest.routes.docs serves them
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(
        AdmissionMiddleware, max_requests_in_flight=settings.max_requests_in_flight,
        max_bytes_in_flight=settings.max_body_bytes_in_flight,
        body_timeout_s=settings.body_timeout_s, metrics=metrics,
    )
    app.add_middleware(RequestContextMiddleware, metrics=metrics)  # added last: outermost
    install_error_handlers(app)
    document_settings(app, settings)
    openai.document_models(app)  # after document_settings: it rewrites what that one documents
    for module in (embed, classify, similarity, models, openai, health, docs):
        app.include_router(module.router)
    app.mount(docs.ASSETS_URL, docs.assets(), name="docs-assets")
    install_playground(app, settings)  # the page at / and CORS: last, so CORS wraps all the middleware
    return app
