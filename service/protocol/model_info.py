"""What the server reports and the client reads back: ``ModelInfo`` (``GET /models``, gRPC ``ListModels``)
and ``LabelScore`` (one label of a zero-shot result)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ModelInfo:
    """What ``GET /models`` shows about one served model."""

    name: str
    dimension: int
    image_size: int
    context_length: int
    logit_scale: float  # exp(logit_scale): multiplies cosine similarity into logits
    backend: str  # "torch" | "onnx" | "fake"
    precision: str  # "fp32" | "fp16" | "bf16" | "int8"
    device: str = "cpu"
    providers: tuple[str, ...] = ()  # ONNX Runtime execution providers actually in use
    fingerprint: str = ""  # hash of weights + preprocessing settings
    extra: dict[str, str] = field(default_factory=dict)
    scoring: str = "softmax"  # "softmax" over labels (CLIP) | "sigmoid" per label (SigLIP)
    logit_bias: float | None = None  # SigLIP's learned bias: sigmoid(logit_scale * cosine + logit_bias)
    backend_reason: str = ""  # why this backend: "exported on first start, cached in ...", "export failed: ..."


@dataclass(frozen=True)
class LabelScore:
    """One label and its score (the model's probability: softmax or sigmoid; or logit on request)."""

    label: str
    score: float
