"""POST /classify: zero-shot labels for base64 images."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from service.rest.deps import EngineDep, require_api_key
from service.rest.disconnect import unless_disconnected
from service.rest.routes.embed import ERRORS
from service.rest.schemas import Classification, ClassifyRequest, ClassifyResponse, LabelScore

router = APIRouter(tags=["zero-shot"], dependencies=[Depends(require_api_key)])


@router.post("/classify", response_model=ClassifyResponse, responses=ERRORS, summary="Zero-shot classification")
async def classify(body: ClassifyRequest, engine: EngineDep, request: Request) -> ClassifyResponse:
    """Rank labels (or a built-in label set) for each image; scores are the model's probabilities
    (softmax over all labels for CLIP, an independent sigmoid per label for SigLIP), or logits with
    ``return_logits``."""
    call = engine.classify(
        body.images, labels=body.labels, templates=body.templates, label_set=body.label_set,
        top_k=body.top_k, logits=body.return_logits, model=body.model,
    )
    result = await unless_disconnected(request, call)
    return ClassifyResponse(
        model=result.model,
        results=[
            Classification(labels=[LabelScore(label=s.label, score=s.score) for s in ranked])
            for ranked in result.results
        ],
    )
