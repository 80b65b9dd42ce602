"""Protobuf messages to engine calls and engine results to protobuf messages (server side)."""

from __future__ import annotations

from collections.abc import Sequence

from service.engine import ClassifyResult, EmbedResult, Image, ImageItem, ImageUrl, Item, SimilarityResult, TextItem
from service.errors import InvalidInput
from service.protocol.generated.clipserve.v1 import clipserve_pb2 as pb
from service.protocol.model_info import ModelInfo
from service.protocol.wire import matrix_to_pb

DEFAULT_TOP_K = 5


def item_from_pb(item: pb.Item, where: str) -> Item:
    """One ``Item`` message as an engine item; ``where`` names it in the error message."""
    kind = item.WhichOneof("kind")
    if kind == "text":
        return TextItem(item.text)
    if kind == "image":
        return ImageItem(item.image)
    if kind == "image_url":
        return ImageUrl(item.image_url)
    raise InvalidInput(f"{where}: set one of text, image or image_url")


def items_from_pb(items: Sequence[pb.Item], field: str) -> list[Item]:
    """A repeated ``Item`` field as engine items."""
    return [item_from_pb(item, f"{field}[{i}]") for i, item in enumerate(items)]


def classify_images(request: pb.ClassifyRequest) -> list[Image]:
    """The images to classify: ``images``, or ``image_items`` (encoded images and URLs), not both."""
    if not request.image_items:
        return list(request.images)
    if request.images:
        raise InvalidInput("give images or image_items, not both")
    out: list[Image] = []
    for i, item in enumerate(request.image_items):
        value = item_from_pb(item, f"image_items[{i}]")
        if isinstance(value, TextItem):
            raise InvalidInput(f"image_items[{i}]: a text; give an image or an image_url")
        out.append(value.data if isinstance(value, ImageItem) else value)
    return out


def model_arg(name: str) -> str | None:
    """An empty model name means the default model."""
    return name or None


def top_k_arg(request: pb.ClassifyRequest) -> int:
    """``top_k`` when set, else the default."""
    return request.top_k if request.HasField("top_k") else DEFAULT_TOP_K


def embed_response(result: EmbedResult) -> pb.EmbedResponse:
    """An engine embedding result as an ``EmbedResponse``."""
    return pb.EmbedResponse(model=result.model, embeddings=matrix_to_pb(result.embeddings))


def classify_response(result: ClassifyResult) -> pb.ClassifyResponse:
    """An engine classification result as a ``ClassifyResponse``."""
    return pb.ClassifyResponse(
        model=result.model,
        results=[
            pb.Classification(labels=[pb.LabelScore(label=s.label, score=s.score) for s in ranked])
            for ranked in result.results
        ],
    )


def similarity_response(result: SimilarityResult) -> pb.SimilarityResponse:
    """An engine similarity result as a ``SimilarityResponse``."""
    return pb.SimilarityResponse(
        model=result.model,
        cosine=matrix_to_pb(result.cosine),
        probabilities=matrix_to_pb(result.probabilities),
    )


def model_info_pb(info: ModelInfo) -> pb.ModelInfo:
    """A served model's description as a ``ModelInfo`` message."""
    return pb.ModelInfo(
        name=info.name,
        dimension=info.dimension,
        image_size=info.image_size,
        context_length=info.context_length,
        logit_scale=info.logit_scale,
        backend=info.backend,
        precision=info.precision,
        device=info.device,
        providers=list(info.providers),
        fingerprint=info.fingerprint,
        extra=dict(info.extra),
        scoring=info.scoring,
        logit_bias=info.logit_bias,
        backend_reason=info.backend_reason,
    )
