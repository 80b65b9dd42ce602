"""Request and response bodies of the REST API (pydantic), with the examples shown in OpenAPI.

Images travel as base64 strings (standard alphabet; whitespace and a ``data:...;base64,`` prefix are
accepted). The OpenAPI document says what the server accepts: a request it admits is refused only for
what no schema can say (an image that does not decode, an unknown model, capacity).

- A body of alternative shapes (an input is a text or an image; classify takes labels or a label set;
  similarity ``left``/``right`` or ``images``/``texts``) validates as one model, whose checks give the
  messages, and is documented as ``oneOf`` its shapes (``_Shaped``).
- What the engine checks, once and with its own messages (non-empty lists, ``top_k`` >= 1, a template's
  ``{}``, the size limits), is in the schema only (``json_schema_extra``); limits set by settings show
  their defaults here and the configured values in the app's document (``document_limits``).
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    StrictBool,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from service.clip.labelsets import label_set_names
from service.config import Settings
from service.rest.image_field import SETTING_KEY, Base64Image, decode_base64, image_item

__all__ = ["Base64Image", "decode_base64", "image_item"]  # the image field's, used beside these bodies

# A 1x1 red PNG: a valid image for the examples.
EXAMPLE_IMAGE = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC"
# In a schema: which keywords hold the value of which setting ({"maxItems": "max_items_per_request"}).
LIMITS_KEY = "x-clipserve-limits"


def bounds(**settings: str) -> dict[str, Any]:
    """Schema keywords set by settings (``maxItems="max_items_per_request"``): defaults, and where from."""
    values = {keyword: Settings.model_fields[name].default for keyword, name in settings.items()}
    return {**values, LIMITS_KEY: dict(settings)}


def document_limits(schema: Any, settings: Settings) -> Any:
    """Write ``settings``' values into every keyword ``bounds`` marked in ``schema`` (in place), and drop the
    alternatives a setting turns off (``SETTING_KEY``: the image URL of an image field); return it."""
    if isinstance(schema, dict):
        if "anyOf" in schema:
            schema["anyOf"] = [s for s in schema["anyOf"] if getattr(settings, s.get(SETTING_KEY, ""), True)]
        for keyword, name in schema.get(LIMITS_KEY, {}).items():
            schema[keyword] = getattr(settings, name)
        for value in schema.values():
            document_limits(value, settings)
    elif isinstance(schema, list):
        for value in schema:
            document_limits(value, settings)
    return schema


def json_integer(value: Any) -> int:
    """An integer as JSON Schema has it: a number without a fractional part (``2.0`` too), not a string."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError("Input should be a valid integer")
    return value


JsonInt = Annotated[int, BeforeValidator(json_integer)]
# Texts, labels and templates: at most max_text_chars characters; a label has a character that is not
# whitespace as str.strip() has it (ECMA's \S differs), a template a '{}' for the label (the engine's checks).
NOT_BLANK = r"[^\t-\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
Text = Annotated[str, Field(json_schema_extra=bounds(maxLength="max_text_chars"))]
Label = Annotated[str, Field(json_schema_extra={"pattern": NOT_BLANK, **bounds(maxLength="max_text_chars")})]
Template = Annotated[str, Field(json_schema_extra={"pattern": r"\{\}", **bounds(maxLength="max_text_chars")})]
# Every list of items has 1 to max_items_per_request items (labels and templates: max_labels).
ITEMS = {"minItems": 1, **bounds(maxItems="max_items_per_request")}


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Shaped(_Body):
    """A body validated as this model and documented as exactly one of ``shapes`` (``oneOf``).

    The model's checks give the error messages; the shapes, which nothing validates with, say the
    same in JSON Schema. The model's title, description and examples stay on the documented schema.
    """

    shapes: ClassVar[tuple[type[BaseModel], ...]] = ()

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        """This model's schema with its properties replaced by ``oneOf`` the shapes."""
        schema = handler(core_schema)
        own = handler.resolve_ref_schema(schema)
        for keyword in ("properties", "required", "type", "additionalProperties"):
            own.pop(keyword, None)
        own["oneOf"] = [handler(shape.__pydantic_core_schema__) for shape in cls.shapes]
        return schema


class TextInput(_Body):
    """An input that is a text."""

    text: Text = Field(description="A text to embed.")
    image: None = Field(None, description="Absent or null.")


class ImageInput(_Body):
    """An input that is an image."""

    image: Base64Image = Field(description="A base64-encoded image, or its http(s) URL, to embed.")
    text: None = Field(None, description="Absent or null.")


class InputItem(_Shaped):
    """One input: exactly one of ``text`` or ``image``."""

    shapes = (TextInput, ImageInput)

    text: str | None = Field(None, description="A text to embed.")
    image: Base64Image | None = Field(None, description="A base64-encoded image, or its http(s) URL, to embed.")

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
    inputs: list[InputItem] = Field(description="Items to embed; results keep this order.", json_schema_extra=ITEMS)
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


class _ClassifyCommon(_Body):
    model: str | None = Field(None, description="Model id; the server's default when omitted.")
    images: list[Base64Image] = Field(
        description="base64-encoded images or http(s) URLs; one result per image, in order.", json_schema_extra=ITEMS
    )
    templates: Annotated[list[Template], Field(json_schema_extra=bounds(maxItems="max_labels"))] | None = Field(
        None, description="Prompt templates with '{}' for the label; the embeddings of all templates are averaged. "
        "Labels x templates are at most max_prompts prompts of max_prompt_chars characters in all (else 413).",
    )
    top_k: JsonInt = Field(
        5, description="Labels returned per image (at most the number of labels).", json_schema_extra={"minimum": 1}
    )
    return_logits: StrictBool = Field(False, description="Scores as logits (logit_scale x cosine + logit_bias).")


class ClassifyWithLabels(_ClassifyCommon):
    """Classify against the given labels."""

    labels: list[Label] = Field(
        description="Class names.", json_schema_extra={"minItems": 1, **bounds(maxItems="max_labels")}
    )
    label_set: Literal[""] | None = Field(None, description="Absent, null or empty.")


class ClassifyWithLabelSet(_ClassifyCommon):
    """Classify against a built-in label set (its classes, and its templates unless given)."""

    label_set: str = Field(description="A built-in label set.", json_schema_extra={"enum": [*label_set_names()]})
    labels: Annotated[list[str], Field(max_length=0)] | None = Field(None, description="Absent, null or empty.")


class ClassifyRequest(_Shaped, _ClassifyCommon):
    """Images to label zero-shot, against given labels or a built-in label set."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"images": [EXAMPLE_IMAGE], "labels": ["cat", "dog", "car"], "top_k": 2},
                {"images": [EXAMPLE_IMAGE], "label_set": "cifar10", "top_k": 3},
            ]
        }
    )
    shapes = (ClassifyWithLabels, ClassifyWithLabelSet)

    labels: list[str] | None = None
    label_set: str | None = None


class LabelScore(BaseModel):
    """A label and its score."""

    label: str
    score: float


class Classification(BaseModel):
    """The best labels of one image, best first (gRPC: ``Classification``)."""

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
    results: list[Classification]


class SimilarityPairs(_Body):
    """The general form: rows ``left`` x columns ``right``, each texts and/or images."""

    model: str | None = Field(None, description="Model id; the server's default when omitted.")
    left: list[InputItem] = Field(description="Rows of the matrices.", json_schema_extra=ITEMS)
    right: list[InputItem] = Field(description="Columns of the matrices.", json_schema_extra=ITEMS)
    images: None = Field(None, description="Absent or null.")
    texts: None = Field(None, description="Absent or null.")


class SimilarityLists(_Body):
    """The simple form: ``images`` x ``texts``, or one of them with itself; at least one of them."""

    model_config = ConfigDict(json_schema_extra={"anyOf": [
        {"required": ["images"], "properties": {"images": {"type": "array"}}},
        {"required": ["texts"], "properties": {"texts": {"type": "array"}}},
    ]})

    model: str | None = Field(None, description="Model id; the server's default when omitted.")
    images: Annotated[list[Base64Image], Field(json_schema_extra=ITEMS)] | None = Field(None, description="The rows.")
    texts: Annotated[list[Text], Field(json_schema_extra=ITEMS)] | None = Field(None, description="The columns.")
    left: None = Field(None, description="Absent or null.")
    right: None = Field(None, description="Absent or null.")


class SimilarityRequest(_Shaped):
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
    shapes = (SimilarityPairs, SimilarityLists)

    model: str | None = Field(None, description="Model id; the server's default when omitted.")
    left: list[InputItem] | None = Field(None, description="Rows of the matrices (texts and/or images).")
    right: list[InputItem] | None = Field(None, description="Columns of the matrices (texts and/or images).")
    images: list[Base64Image] | None = Field(None, description="Simple form: base64 images or URLs (the rows).")
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
    """Matrices of shape (rows, columns): cosine similarity, and the model's probabilities (docs/api.md)."""

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
    scoring: Literal["softmax", "sigmoid"] = Field("softmax", description="softmax over labels, or sigmoid per label.")
    logit_bias: float | None = Field(None, description="SigLIP: sigmoid(logit_scale x cosine + logit_bias); else null.")
    backend_reason: str = Field("", description="Why this backend serves it, e.g. 'forced by --backend torch'.")


class ModelsResponse(BaseModel):
    """The served models; the first is the default."""

    data: list[ModelCard]


class Health(BaseModel):
    """Liveness."""

    status: Literal["ok"]


class Readiness(BaseModel):
    """Readiness: ``ready`` (200), else ``not ready`` or ``draining`` (503)."""

    status: Literal["ready", "not ready", "draining"]


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
