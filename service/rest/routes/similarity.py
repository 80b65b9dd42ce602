"""POST /similarity: cosine similarities and CLIP probabilities between two lists of items."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from service.engine import Item, TextItem
from service.rest.deps import EngineDep, require_api_key
from service.rest.disconnect import unless_disconnected
from service.rest.routes.embed import ERRORS
from service.rest.schemas import InputItem, SimilarityRequest, SimilarityResponse, image_item


def _items(inputs: list[InputItem]) -> list[Item]:
    return [TextItem(i.text) if i.text is not None else image_item(i.image or b"") for i in inputs]


def sides(body: SimilarityRequest) -> tuple[list[Item], list[Item]]:
    """The rows and columns: ``left``/``right``, or images x texts (one list alone: itself)."""
    if body.left is not None and body.right is not None:
        return _items(body.left), _items(body.right)
    images: list[Item] = [image_item(data) for data in body.images or []]
    texts: list[Item] = [TextItem(text) for text in body.texts or []]
    if body.images is not None and body.texts is not None:
        return images, texts
    one = images if body.images is not None else texts
    return one, one


router = APIRouter(tags=["similarity"], dependencies=[Depends(require_api_key)])


@router.post("/similarity", response_model=SimilarityResponse, responses=ERRORS, summary="Similarity matrices")
async def similarity(body: SimilarityRequest, engine: EngineDep, request: Request) -> SimilarityResponse:
    """Cosine similarity of every row item with every column item, and the model's probabilities: per
    row the softmax over columns of logit_scale x cosine (CLIP), or per entry sigmoid(logit_scale x
    cosine + logit_bias) (SigLIP)."""
    left, right = sides(body)
    result = await unless_disconnected(request, engine.similarity(left, right, model=body.model))
    return SimilarityResponse(
        model=result.model, cosine=result.cosine.tolist(), probabilities=result.probabilities.tolist()
    )
