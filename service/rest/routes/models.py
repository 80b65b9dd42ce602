"""GET /models: the served models."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from service.rest.deps import EngineDep, require_api_key
from service.rest.routes.openapi import error_responses
from service.rest.schemas import ModelCard, ModelsResponse

router = APIRouter(tags=["models"], dependencies=[Depends(require_api_key)])


# 422 only to keep FastAPI from documenting its own validation error body: nothing here can be invalid.
@router.get("/models", response_model=ModelsResponse, responses=error_responses(401, 422), summary="Served models")
async def models(engine: EngineDep) -> ModelsResponse:
    """Id, dimension, image size, backend (and why it), precision, providers and fingerprint of each model."""
    cards = [
        ModelCard(
            id=info.name, default=i == 0, dimension=info.dimension, image_size=info.image_size,
            context_length=info.context_length, logit_scale=info.logit_scale, backend=info.backend,
            precision=info.precision, device=info.device, providers=list(info.providers),
            fingerprint=info.fingerprint, extra=dict(info.extra), scoring=info.scoring, logit_bias=info.logit_bias,
            backend_reason=info.backend_reason,
        )
        for i, info in enumerate(engine.models())
    ]
    return ModelsResponse(data=cards)
