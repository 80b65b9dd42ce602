"""Zero-shot classification with CLIP, in numpy: class embeddings from prompts, and ranking.

A class embedding is CLIP's prompt ensemble: each label is put into every template, the texts are
embedded and L2-normalised, averaged over templates, and normalised again. An image's scores are
``softmax(logit_scale * cosine)`` over the classes for CLIP, and for SigLIP (scoring ``sigmoid``) each
class on its own, ``sigmoid(logit_scale * cosine + logit_bias)``. Labels given without templates use
``DEFAULT_TEMPLATES`` (the single prompt ``"a photo of a {}."`` of the CLIP paper).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from service.clip.labelsets import LabelSet, get_label_set, label_set_names
from service.errors import InvalidInput

__all__ = [
    "DEFAULT_TEMPLATES", "PLACEHOLDER", "LabelSet", "class_embeddings", "classify", "get_label_set", "label_set_names",
    "normalise", "probabilities", "prompts", "resolve_templates", "sigmoid", "softmax",
]

DEFAULT_TEMPLATES: tuple[str, ...] = ("a photo of a {}.",)
PLACEHOLDER = "{}"
EncodeTexts = Callable[[list[str]], np.ndarray]


def resolve_templates(templates: Sequence[str] | None) -> tuple[str, ...]:
    """The templates to use: the given ones (each must contain ``{}``) or ``DEFAULT_TEMPLATES``."""
    if not templates:
        return DEFAULT_TEMPLATES
    for template in templates:
        if PLACEHOLDER not in template:
            raise InvalidInput(f"template {template!r} has no '{{}}' where the label goes")
    return tuple(templates)


def prompts(labels: Sequence[str], templates: Sequence[str]) -> list[str]:
    """Every label in every template, label-major: ``[t0(l0), t1(l0), ..., t0(l1), ...]``.

    Each ``{}`` of a template is replaced by the label (plain replacement: other braces are kept).
    """
    return [template.replace(PLACEHOLDER, label) for label in labels for template in templates]


def normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm, as float32 (all-zero rows stay zero)."""
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.asarray(x / np.maximum(norms, 1e-12), dtype=np.float32)


def class_embeddings(
    labels: Sequence[str],
    templates: Sequence[str] | None,
    encode_texts: EncodeTexts,
    chunk_size: int = 4096,
) -> np.ndarray:
    """(C, D) float32 class embeddings: normalise(mean over templates of normalise(embed(prompt))).

    ``encode_texts`` embeds a list of texts into (N, D) rows; it is called on at most ``chunk_size``
    prompts at a time (ImageNet's 1000 classes x 80 templates are 80,000 prompts).
    """
    if not labels:
        raise InvalidInput("no labels to classify against")
    chosen = resolve_templates(templates)
    texts = prompts(labels, chosen)
    parts = [np.asarray(encode_texts(texts[i : i + chunk_size]), np.float32) for i in range(0, len(texts), chunk_size)]
    embedded = normalise(np.concatenate(parts))
    per_class = embedded.reshape(len(labels), len(chosen), -1).mean(axis=1)
    return normalise(per_class)


def softmax(x: np.ndarray) -> np.ndarray:
    """Row-wise softmax, stable for large logits."""
    shifted = np.exp(x - x.max(axis=1, keepdims=True))
    out: np.ndarray = shifted / shifted.sum(axis=1, keepdims=True)
    return out


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Element-wise logistic function, without overflow for large negative logits."""
    out: np.ndarray = np.exp(-np.logaddexp(0.0, -x))
    return out


def model_logits(cosine: np.ndarray, logit_scale: float, logit_bias: float | None = None) -> np.ndarray:
    """``logit_scale * cosine (+ logit_bias)``: the model's logits (SigLIP's carry its learned bias)."""
    logits = logit_scale * np.asarray(cosine, np.float32)
    return logits if logit_bias is None else logits + np.float32(logit_bias)


def probabilities(cosine: np.ndarray, logit_scale: float, scoring: str = "softmax",
                  logit_bias: float | None = None) -> np.ndarray:
    """Scores as the model's family defines them: a softmax over each row's columns (CLIP), or a sigmoid
    of each entry on its own (SigLIP: columns are independent, a row need not sum to 1)."""
    logits = model_logits(cosine, logit_scale, logit_bias)
    if scoring == "sigmoid":
        return sigmoid(logits).astype(np.float32)
    return softmax(logits).astype(np.float32)


def classify(
    image_emb: np.ndarray, class_emb: np.ndarray, logit_scale: float, top_k: int = 5, logits: bool = False,
    scoring: str = "softmax", logit_bias: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Rank classes per image: (N, k) class indices, best first, and their scores.

    Scores are ``probabilities`` (softmax over all C classes, or a sigmoid per class with ``scoring``
    ``sigmoid``) of ``logit_scale * cosine (+ logit_bias)``, or those logits themselves with
    ``logits=True``. ``k = min(top_k, C)``; ties keep the lower class index first.
    """
    if top_k < 1:
        raise InvalidInput(f"top_k must be at least 1, got {top_k}")
    cosine = np.asarray(image_emb, np.float32) @ np.asarray(class_emb, np.float32).T
    if logits:
        scores = model_logits(cosine, logit_scale, logit_bias)
    else:
        scores = probabilities(cosine, logit_scale, scoring, logit_bias)
    k = min(top_k, scores.shape[1])
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(scores, order, axis=1).astype(np.float32)
