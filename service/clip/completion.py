"""Complete a ``ModelConfig`` from the loaded model: sizes, preprocessing, and what its family needs.

A family is what the text side and the scores of a model follow (``docs/configuration.md``):

- the tokenizer: CLIP's BPE (``tokenizer`` None), or Hugging Face tokenizer files where open_clip's
  config names them (``text_cfg.hf_tokenizer_name`` -> ``hf-hub:<repo>``, with its ``tokenizer_kwargs``:
  ``clean``, ``strip_sep_token``) or where a Hugging Face folder carries them;
- the scoring: ``softmax`` over labels (CLIP), or ``sigmoid`` with the model's ``logit_bias`` where it
  has one (SigLIP: each label scored on its own, ``sigmoid(logit_scale * cos + logit_bias)``).

Values the config set explicitly win (a repository entry is authoritative), except that image size and
context length must agree with the model.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from service.clip.model_config import HUB_PREFIX, ModelConfig

_DEFAULT_PREPROCESS: dict[str, Any] = {"interpolation": "bicubic", "resize_mode": "shortest"}


def text_family(model_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Tokenizer fields of an open_clip model config: its HF tokenizer and open_clip's kwargs for it.

    open_clip's ``HFTokenizer`` defaults to ``clean='whitespace'``; SigLIP configs say ``canonicalize``.
    """
    text_cfg = model_cfg.get("text_cfg") or {}
    name = text_cfg.get("hf_tokenizer_name")
    if not name:
        return {}
    kwargs = text_cfg.get("tokenizer_kwargs") or {}
    return {
        "tokenizer": f"{HUB_PREFIX}{name}",
        "tokenizer_clean": kwargs.get("clean", "whitespace"),
        "strip_sep_token": bool(kwargs.get("strip_sep_token", False)),
    }


def scoring_of(model: Any) -> dict[str, Any]:
    """``exp(logit_scale)``, and sigmoid scoring with the bias where the model has a ``logit_bias``."""
    import torch

    with torch.no_grad():
        out: dict[str, Any] = {"logit_scale": float(model.logit_scale.float().exp().reshape(-1)[0])}
        bias = getattr(model, "logit_bias", None)
        if bias is not None:
            out.update(scoring="sigmoid", logit_bias=float(bias.float().reshape(-1)[0]))
    return out


def model_image_size(model: Any) -> int:
    """The square input size of the model's image tower."""
    size = getattr(model.visual, "image_size", None)
    if isinstance(size, (tuple, list)):
        if size[0] != size[1]:
            raise ValueError(f"non-square image size {tuple(size)} is not supported")
        size = size[0]
    if size is None:
        raise ValueError("the image tower does not report its image size")
    return int(size)


def model_context_length(model: Any) -> int:
    """The text tower's context length."""
    text = getattr(model, "text", model)
    return int(text.context_length)


def model_embed_dim(model: Any) -> int:
    """The embedding size, read off one single-token text through the text tower."""
    import torch

    from service.clip.text import encode_text_trimmed

    with torch.inference_mode():
        return int(encode_text_trimmed(model, torch.zeros((1, 1), dtype=torch.long)).shape[-1])


def complete_config(
    config: ModelConfig, model: Any, preprocess: Mapping[str, Any], precision: str,
    family: Mapping[str, Any] | None = None,
) -> ModelConfig:
    """Fill the config from the model and its preprocessing.

    Values the config set explicitly win for preprocessing (a repository entry is authoritative);
    image size and context length must agree with the model; embed_dim and logit_scale are the model's.
    """
    values: dict[str, Any] = {**_DEFAULT_PREPROCESS, **{k: v for k, v in preprocess.items() if v is not None}}
    found: dict[str, Any] = {
        "image_size": model_image_size(model),
        "context_length": model_context_length(model),
        "mean": tuple(float(x) for x in values.get("mean", config.mean)),
        "std": tuple(float(x) for x in values.get("std", config.std)),
        "interpolation": values["interpolation"],
        "resize_mode": values["resize_mode"],
    }
    for key, allowed in (("interpolation", ("bicubic", "bilinear")), ("resize_mode", ("shortest", "squash"))):
        if found[key] not in allowed:
            raise ValueError(f"model {config.name!r}: {key} {found[key]!r} is not supported ({', '.join(allowed)})")
    explicit = config.model_fields_set
    for key in ("image_size", "context_length"):
        if key in explicit and getattr(config, key) != found[key]:
            raise ValueError(
                f"model {config.name!r}: config says {key}={getattr(config, key)} but the model has {found[key]}"
            )
    update = {k: v for k, v in found.items() if k not in explicit}
    update.update({k: v for k, v in (family or {}).items() if k not in explicit})
    update.update(scoring_of(model))
    update["embed_dim"] = model_embed_dim(model)
    update["precision"] = precision
    data = config.model_dump()
    data.update(update)
    return ModelConfig.model_validate(data)


