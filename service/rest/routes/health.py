"""GET /healthz (liveness), GET /readyz (readiness) and GET /metrics (Prometheus)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from service.rest.deps import EngineDep
from service.rest.schemas import Health, Readiness

router = APIRouter(tags=["operations"])
PROMETHEUS_TEXT = {"text/plain": {"schema": {"type": "string"}}}


@router.get("/healthz", summary="Liveness")
async def healthz() -> Health:
    """200 while the process serves HTTP at all."""
    return Health(status="ok")


@router.get(
    "/readyz", summary="Readiness", responses={
        200: {"model": Readiness, "description": "Every model is loaded, warm and its workers answer."},
        503: {"model": Readiness, "description": "Not ready yet, or draining for shutdown."},
    },
)
async def readyz(engine: EngineDep) -> JSONResponse:
    """200 when every model is loaded, warm and its workers answer; 503 while draining."""
    if engine.ready:
        return JSONResponse({"status": "ready"})
    return JSONResponse({"status": "draining" if engine.draining else "not ready"}, status_code=503)


@router.get(
    "/metrics", summary="Prometheus metrics", response_class=Response,
    responses={200: {"description": "The Prometheus text format.", "content": PROMETHEUS_TEXT}},
)
async def metrics(request: Request) -> Response:
    """Every ``clipserve_*`` metric in the Prometheus text format."""
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
