"""The OpenAI-compatible API: ``POST /v1/embeddings`` and ``GET /v1/models``, on the same engine.

The official ``openai`` SDK (and anything that speaks OpenAI's embeddings API) works against it:
``OpenAI(base_url="http://host:8000/v1", api_key=...)``. Images travel through the same endpoint
the way infinity marks them: ``"modality": "image"`` (the SDK's ``extra_body``), each ``input`` a
``data:image/...;base64,...`` URI (plain base64 is accepted too) or an ``http(s)://`` URL, which the
server fetches (``service.engine.fetch``: public addresses only unless configured).

``usage`` counts tokens with the model's own tokenizer: per text, its ids with the start and end
tokens, at most the context length (what the model reads); an image counts 0.

Errors here have OpenAI's body, ``{"error": {"message", "type", "param", "code"}}``
(``service.rest.errors`` answers by path); refusals made before a body is read (the admission's
429, a 413 by ``Content-Length``) keep the native body, which the same schema admits.
"""

from __future__ import annotations

import base64
import copy
import time
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Depends, FastAPI, Request
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

from service.engine import ImageItem, ImageUrl, Item, TextItem
from service.errors import ClipServeError, NotFound
from service.protocol.errors import ErrorKind
from service.protocol.model_info import ModelInfo
from service.rest.deps import EngineDep, require_api_key
from service.rest.disconnect import unless_disconnected
from service.rest.image_field import decode_image
from service.rest.image_field import image_item as native_image_item
from service.rest.routes.openapi import ENGINE_ERRORS, error_responses
from service.rest.schemas import ITEMS, Text, _Body, _Shaped, json_integer

router = APIRouter(prefix="/v1", tags=["openai"], dependencies=[Depends(require_api_key)])
# What the models list says each model was created at (OpenAI's field): when this server started.
STARTED = int(time.time())


class OpenAIErrorDetail(BaseModel):
    """OpenAI's error: a message, a class of error, the parameter at fault and a code (clipserve's kind)."""

    message: str
    type: str = Field(description="invalid_request_error, authentication_error, rate_limit_error, server_error")
    param: str | None = Field(None, description="The request field at fault, when known.")
    code: str | None = Field(None, description="not_found, model_not_found, invalid_argument, too_large, ...")


class OpenAIErrorResponse(BaseModel):
    """The body of every error on the /v1/ routes."""

    error: OpenAIErrorDetail


def openai_errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses`` for error statuses with OpenAI's error body (and ``Retry-After`` as natively)."""
    responses = error_responses(*statuses)
    for response in responses.values():
        response["model"] = OpenAIErrorResponse
    return responses


class OpenAIRequestError(ClipServeError):
    """A refusal naming the request field at fault (``param``) and, optionally, OpenAI's ``code``."""

    def __init__(self, message: str, kind: ErrorKind, param: str, code: str | None = None) -> None:
        super().__init__(message, kind)
        self.param = param
        self.code = code


def no_token_ids(value: Any) -> Any:
    """Refuse OpenAI's token-id inputs (an int array, or a list of them) with a clear reason."""
    if isinstance(value, int) or (isinstance(value, list) and any(isinstance(v, int | list) for v in value)):
        raise ValueError("token-id arrays are not accepted: send texts (the model's tokenizer reads them)")
    return value


ImageText = Annotated[str, WithJsonSchema({
    "type": "string", "format": "byte", "minLength": 1,
    "description": "An image as a data URI (data:image/png;base64,...), plain base64, or an http(s) URL "
    "the server fetches.",
})]
PositiveInt = Annotated[int, Field(ge=1), BeforeValidator(json_integer)]
ModelName = Annotated[str, Field(min_length=1, description="A served model's id (GET /v1/models).")]
Encoding = Annotated[
    Literal["float", "base64"],
    Field(description="'float' (default): lists of numbers; 'base64': little-endian float32 bytes, base64."),
]
Dimensions = Annotated[
    PositiveInt | None, Field(description="Accepted only when it equals the model's dimension (no truncation).")
]
User = Annotated[str | None, Field(description="Accepted and ignored.")]


class _TextShape(_Body):
    """Texts to embed."""

    model: ModelName
    input: Text | Annotated[list[Text], Field(json_schema_extra=ITEMS)] = Field(description="A text or texts.")
    modality: Literal["text"] = Field("text", description="'text' (default).")
    encoding_format: Encoding = "float"
    dimensions: Dimensions = None
    user: User = None


class _ImageShape(_Body):
    """Images to embed."""

    model: ModelName
    input: ImageText | Annotated[list[ImageText], Field(json_schema_extra=ITEMS)] = Field(
        description="An image or images: data URIs or http(s) URLs (fetched by the server)."
    )
    modality: Literal["image"] = Field(description="'image': each input is an image.")
    encoding_format: Encoding = "float"
    dimensions: Dimensions = None
    user: User = None


class EmbeddingsRequest(_Shaped):
    """OpenAI's embeddings request, with infinity's ``modality`` for images."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"model": "clipserve-demo", "input": ["a dog"]}]})
    shapes = (_TextShape, _ImageShape)

    model: ModelName
    input: Annotated[str | list[str], BeforeValidator(no_token_ids)] = Field(description="A text or texts.")
    modality: Literal["text", "image"] = "text"
    encoding_format: Encoding = "float"
    dimensions: Dimensions = None
    user: User = None


class OpenAIEmbedding(BaseModel):
    """The embedding of input ``index``."""

    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str = Field(description="L2-normalised floats, or base64 of little-endian float32.")


class Usage(BaseModel):
    """Tokens read: texts by the model's tokenizer (start and end tokens included), images 0."""

    prompt_tokens: int
    total_tokens: int


class EmbeddingsResponse(BaseModel):
    """One embedding per input, in input order."""

    object: Literal["list"] = "list"
    data: list[OpenAIEmbedding]
    model: str
    usage: Usage


class OpenAIModel(BaseModel):
    """One served model as OpenAI lists it."""

    id: str
    object: Literal["model"] = "model"
    created: int = Field(description="When this server started (Unix seconds).")
    owned_by: str = "clipserve"


class ModelList(BaseModel):
    """The served models; the first is the default of the native API."""

    object: Literal["list"] = "list"
    data: list[OpenAIModel]


def _for_model(shape: dict[str, Any], info: ModelInfo) -> dict[str, Any]:
    """A request shape for one served model: its name, and its dimension the one ``dimensions`` taken."""
    shape = copy.deepcopy(shape)
    shape["title"] = f"{shape.get('title', 'EmbeddingsRequest').strip('_')} ({info.name})"
    properties = shape["properties"]
    properties["model"] = {**properties["model"], "enum": [info.name]}
    properties["dimensions"]["anyOf"][0] = {"type": "integer", "enum": [info.dimension]}
    return shape


def document_models(app: FastAPI) -> None:
    """Make ``app``'s ``/openapi.json`` name the models ``/v1/embeddings`` serves, each with the one
    ``dimensions`` it takes (once the engine serves them; before, any model and dimension)."""
    generate = app.openapi
    shapes: list[dict[str, Any]] = []  # the shapes as generated, before any rewrite

    def openapi() -> dict[str, Any]:
        document = generate()
        engine = getattr(app.state, "engine", None)
        models = engine.models() if engine is not None else []
        schema = document.get("components", {}).get("schemas", {}).get(EmbeddingsRequest.__name__)
        if schema is None or not models:
            return document
        if not shapes:
            shapes.extend(copy.deepcopy(schema["oneOf"]))
        schema["oneOf"] = [_for_model(shape, info) for info in models for shape in shapes]
        return document

    app.openapi = openapi  # type: ignore[method-assign]


def image_item(value: str, where: str) -> ImageItem | ImageUrl:
    """One image input: a data URI of an image, plain base64, or a URL (``scheme://``) the engine fetches."""
    if value.startswith("data:") and not value.startswith("data:image/"):
        message = f"{where}: not an image data URI (data:image/...;base64,...)"
        raise OpenAIRequestError(message, ErrorKind.INVALID, "input")
    try:
        return native_image_item(decode_image(value))
    except ValueError as exc:
        raise OpenAIRequestError(f"{where}: {exc}", ErrorKind.INVALID, "input") from None


def vectors(rows: np.ndarray, encoding: str) -> list[list[float]] | list[str]:
    """Rows as float lists, or as base64 of little-endian float32 (OpenAI's ``base64``)."""
    if encoding == "base64":
        packed = np.ascontiguousarray(rows, dtype="<f4")
        return [base64.b64encode(row.tobytes()).decode() for row in packed]
    out: list[list[float]] = rows.tolist()
    return out


def check_dimensions(asked: int | None, dimension: int) -> None:
    """``dimensions`` is accepted only as the model's own dimension: clipserve does not truncate."""
    if asked is not None and asked != dimension:
        raise OpenAIRequestError(
            f"dimensions: this model's embeddings have {dimension} dimensions; got {asked} "
            "(other sizes are not supported: omit it or send the model's dimension)",
            ErrorKind.INVALID, "dimensions",
        )


@router.post(
    "/embeddings", response_model=EmbeddingsResponse, responses=openai_errors(*ENGINE_ERRORS),
    summary="Embed texts or images (OpenAI-compatible)",
)
async def embeddings(body: EmbeddingsRequest, engine: EngineDep, request: Request) -> EmbeddingsResponse:
    """OpenAI's embeddings call: texts, or images with ``"modality": "image"``; one embedding per input."""
    inputs = [body.input] if isinstance(body.input, str) else body.input
    known = {info.name: info.dimension for info in engine.models()}
    if body.model in known:  # refused before any work; an alias of a served model is checked after
        check_dimensions(body.dimensions, known[body.model])
    items: list[Item]
    if body.modality == "image":
        items = [image_item(value, f"input[{i}]") for i, value in enumerate(inputs)]
    else:
        items = [TextItem(text) for text in inputs]
    try:
        result = await unless_disconnected(request, engine.embed(items, model=body.model, field="input"))
    except NotFound as exc:
        raise OpenAIRequestError(exc.message, ErrorKind.NOT_FOUND, "model", "model_not_found") from None
    except ClipServeError as exc:  # an item's error ("input[2]: not an image..."): name the field
        if not exc.message.startswith("input"):
            raise
        raise OpenAIRequestError(exc.message, exc.kind, "input") from None
    check_dimensions(body.dimensions, result.dimension)
    tokens = sum(engine.count_tokens(inputs, body.model)) if body.modality == "text" else 0
    rows: list[Any] = vectors(result.embeddings, body.encoding_format)
    data = [OpenAIEmbedding.model_construct(object="embedding", index=i, embedding=v) for i, v in enumerate(rows)]
    return EmbeddingsResponse(data=data, model=result.model, usage=Usage(prompt_tokens=tokens, total_tokens=tokens))


# 422 only to keep FastAPI from documenting its own validation error body: nothing here can be invalid.
@router.get("/models", response_model=ModelList, responses=openai_errors(401, 422), summary="Served models (OpenAI)")
async def list_models(engine: EngineDep) -> ModelList:
    """The served models in OpenAI's list shape."""
    return ModelList(data=[OpenAIModel(id=info.name, created=STARTED) for info in engine.models()])
