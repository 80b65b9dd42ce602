"""Request and response bodies of the REST API (pydantic), with the examples shown in OpenAPI.

Images travel as base64 strings (standard alphabet; whitespace and a ``data:...;base64,`` prefix are
accepted). Size and count limits are checked once, in the engine, not here.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, model_validator

# A 1x1 red PNG: a valid image for the examples.
EXAMPLE_IMAGE = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC"


def decode_base64(value: Any) -> bytes:
    """Decode a base64 image string; raise ValueError with a clear reason."""
    if not isinstance(value, str):
        raise ValueError(f"expected a base64 string, got {type(value).__name__}")
    if value.startswith("data:"):
        value = value.partition(",")[2]
    try:
        return base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"invalid base64: {exc}") from None


Base64Image = Annotated[
    bytes,
    BeforeValidator(decode_base64),
    WithJsonSchema({"type": "string", "format": "byte", "description": "An encoded image (JPEG, PNG...), base64."}),
]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InputItem(_Body):
    """One input: exactly one of ``text`` or ``image``."""

    text: str | None = Field(None, description="A text to embed.")
    image: Base64Image | None = Field(None, description="A base64-encoded image to embed.")

    @model_validator(mode="after")
    def _one_of(self) -> InputItem:
        if (self.text is None) == (self.image is None):
            raise ValueError("give exactly one of 'text' or 'image'")
        return self


class EmbedRequest(_Body):
    """Texts and images to embed, mixed in any order."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"inputs": [{"text": "a photo of a dog"}, {"image": EXAMPLE_IMAGE}], "encoding": "float"}]
        }
    )

    model: str | None = Field(None, description="Model id (GET /models); the server's default when omitted.")
    inputs: list[InputItem] = Field(description="Items to embed; results keep this order.")
    encoding: Literal["float", "base64"] = Field(
        "float", description="'float': lists of numbers; 'base64': little-endian float32 bytes, base64."
    )


class Embedding(BaseModel):
    """The embedding of input ``index``."""

    index: int
    embedding: list[float] | str = Field(description="L2-normalised floats, or base64 of little-endian float32.")


class EmbedResponse(BaseModel):
    """One embedding per input, in input order."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"model": "clipserve-demo", "dimension": 4, "data": [
                {"index": 0, "embedding": [0.5, -0.5, 0.5, 0.5]}, {"index": 1, "embedding": "AAAAPwAAAL8AAAA/AAAAPw=="}
            ]}]
        }
    )

    model: str
    dimension: int
    data: list[Embedding]


class ClassifyRequest(_Body):
    """Images to label zero-shot, against given labels or a built-in label set."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"images": [EXAMPLE_IMAGE], "labels": ["cat", "dog", "car"], "top_k": 2},
                {"images": [EXAMPLE_IMAGE], "label_set": "cifar10", "top_k": 3},
            ]
        }
    )

    model: str | None = Field(None, description="Model id; the server's default when omitted.")
    images: list[Base64Image] = Field(description="base64-encoded images; one result per image, in order.")
    labels: list[str] | None = Field(None, description="Class names (or give label_set).")
    templates: list[str] | None = Field(
        None, description="Prompt templates with '{}' for the label; the embeddings of all templates are averaged."
    )
    label_set: str | None = Field(None, description="A built-in label set: imagenet, cifar10, cifar100.")
    top_k: int = Field(5, description="Labels returned per image (at most the number of labels).")
    return_logits: bool = Field(False, description="Scores as logits (logit_scale x cosine) instead of probabilities.")


class LabelScore(BaseModel):
    """A label and its score."""

    label: str
    score: float


class ClassifyResult(BaseModel):
    """The best labels of one image, best first."""

    labels: list[LabelScore]


class ClassifyResponse(BaseModel):
    """One result per image, in input order."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"model": "clipserve-demo", "results": [{"labels": [
                {"label": "dog", "score": 0.91}, {"label": "cat", "score": 0.07}
            ]}]}]
        }
    )

    model: str
    results: list[ClassifyResult]


class SimilarityRequest(_Body):
    """Two lists of items to compare: ``left`` x ``right``, or the simple form ``images`` x ``texts``.

    Simple form: with both ``images`` and ``texts``, rows are images and columns texts (CLIP's
    image-to-text probabilities); with only one of them, that list is compared with itself.
    """

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"images": [EXAMPLE_IMAGE], "texts": ["a red square", "a blue circle"]},
                {"left": [{"text": "a dog"}], "right": [{"image": EXAMPLE_IMAGE}, {"text": "a puppy"}]},
            ]
        }
    )

    model: str | None = Field(None, description="Model id; the server's default when omitted.")
    left: list[InputItem] | None = Field(None, description="Rows of the matrices (texts and/or images).")
    right: list[InputItem] | None = Field(None, description="Columns of the matrices (texts and/or images).")
    images: list[Base64Image] | None = Field(None, description="Simple form: base64 images (the rows).")
    texts: list[str] | None = Field(None, description="Simple form: texts (the columns).")

    @model_validator(mode="after")
    def _one_form(self) -> SimilarityRequest:
        general = self.left is not None or self.right is not None
        simple = self.images is not None or self.texts is not None
        if general and simple:
            raise ValueError("use either 'left'/'right' or 'images'/'texts', not both")
        if general and (self.left is None or self.right is None):
            raise ValueError("give both 'left' and 'right'")
        if not general and not simple:
            raise ValueError("give 'left' and 'right', or 'images' and/or 'texts'")
        return self


class SimilarityResponse(BaseModel):
    """Matrices of shape (rows, columns): cosine similarity, and softmax over each row of logit_scale x cosine."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"model": "clipserve-demo", "cosine": [[0.31, 0.12]], "probabilities": [[0.99, 0.01]]}]
        }
    )

    model: str
    cosine: list[list[float]]
    probabilities: list[list[float]]


class ModelCard(BaseModel):
    """What the server knows about one served model."""

    id: str
    default: bool = Field(description="True for the model used when a request names none.")
    dimension: int
    image_size: int
    context_length: int
    logit_scale: float
    backend: str
    precision: str
    device: str
    providers: list[str] = Field(description="ONNX Runtime execution providers in use (onnx backend).")
    fingerprint: str = Field(description="Hash of the weights and preprocessing settings.")
    extra: dict[str, str] = Field(default_factory=dict)


class ModelsResponse(BaseModel):
    """The served models; the first is the default."""

    data: list[ModelCard]


class ErrorDetail(BaseModel):
    """What went wrong: a kind (stable, for programs) and a message (for people)."""

    type: str = Field(description="invalid_argument, too_large, not_found, overloaded, timeout, unavailable, ...")
    message: str


class ErrorResponse(BaseModel):
    """The body of every error response."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"error": {"type": "invalid_argument", "message": "inputs[3]: not a valid image: ..."}}]
        }
    )

    error: ErrorDetail
