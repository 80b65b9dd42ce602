"""POST /embed (JSON: texts and base64 images, mixed) and POST /embed/upload (multipart image files)."""

from __future__ import annotations

import base64
from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from pydantic import WithJsonSchema

from service.engine import EmbedResult, ImageItem, Item, TextItem
from service.rest.deps import EngineDep, require_api_key
from service.rest.disconnect import unless_disconnected
from service.rest.routes.openapi import ENGINE_ERRORS, error_responses
from service.rest.schemas import ITEMS, Embedding, EmbedRequest, EmbedResponse, image_item

router = APIRouter(tags=["embeddings"], dependencies=[Depends(require_api_key)])
ERRORS = error_responses(*ENGINE_ERRORS)
# A file part: bytes, not empty; whether they are an image is checked when read (422 when not).
IMAGE_FILE = {"type": "string", "format": "binary", "contentMediaType": "image/*", "minLength": 1}
# A form field is text, never null; empty, it is omitted (FastAPI): the default.
FORM_TEXT = WithJsonSchema({"type": "string"})
FORM_ENCODING = WithJsonSchema({"type": "string", "enum": ["float", "base64", ""]})


def embed_response(result: EmbedResult, encoding: str) -> EmbedResponse:
    """Rows as float lists, or as base64 of little-endian float32 (``encoding="base64"``)."""
    rows = result.embeddings
    if encoding == "base64":
        packed = np.ascontiguousarray(rows, dtype="<f4")
        values: list[list[float]] | list[str] = [base64.b64encode(row.tobytes()).decode() for row in packed]
    else:
        values = rows.tolist()
    data = [Embedding.model_construct(index=i, embedding=v) for i, v in enumerate(values)]  # type: ignore[arg-type]
    return EmbedResponse(model=result.model, dimension=result.dimension, data=data)


@router.post("/embed", response_model=EmbedResponse, responses=ERRORS, summary="Embed texts and images")
async def embed(body: EmbedRequest, engine: EngineDep, request: Request) -> EmbedResponse:
    """Embed texts and base64 images (mixed allowed); one L2-normalised embedding per input, in order."""
    items: list[Item] = [
        TextItem(item.text) if item.text is not None else image_item(item.image or b"") for item in body.inputs
    ]
    result = await unless_disconnected(request, engine.embed(items, model=body.model))
    return embed_response(result, body.encoding)


@router.post("/embed/upload", response_model=EmbedResponse, responses=ERRORS, summary="Embed uploaded image files")
async def embed_upload(
    engine: EngineDep,
    request: Request,
    files: Annotated[
        list[UploadFile], File(description="Image files (multipart/form-data), one embedding each.",
                               json_schema_extra={**ITEMS, "items": IMAGE_FILE}),
    ],
    model: Annotated[str | None, Form(description="Model id; the default when omitted or empty."), FORM_TEXT] = None,
    encoding: Annotated[
        Literal["float", "base64"], Form(description="'float' (also when empty) or 'base64'."), FORM_ENCODING
    ] = "float",
) -> EmbedResponse:
    """Embed image files sent as ``multipart/form-data`` (field ``files``, repeated); results in file order."""
    items: list[Item] = [ImageItem(await f.read()) for f in files]
    return embed_response(await unless_disconnected(request, engine.embed(items, model=model)), encoding)
