"""Load a Hugging Face ``CLIPModel`` folder as an open_clip CLIP (no ``transformers`` needed).

Hugging Face's CLIP is the same network as open_clip's ViT CLIP with other parameter names: the
folder's ``config.json`` maps onto an open_clip model config, the state dict's keys are renamed (HF's
separate q/k/v projections concatenate into ``in_proj_weight``/``in_proj_bias``; the projection
``Linear`` weights transpose into ``proj``/``text_projection``), and ``preprocessor_config.json``
gives mean, std, size and interpolation.

This module reads and converts only; ``service.clip.loading`` builds the model (no import cycle).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from service.errors import NotFound

if TYPE_CHECKING:
    import torch

# transformers' CLIPTextConfig / CLIPVisionConfig defaults: save_pretrained may omit default values.
_TEXT_DEFAULTS = {
    "vocab_size": 49408, "hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 12,
    "num_attention_heads": 8, "max_position_embeddings": 77, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5,
}
_VISION_DEFAULTS = {
    "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
    "image_size": 224, "patch_size": 32, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5,
}
_ACTIVATIONS = {"quick_gelu": True, "gelu": False}  # -> open_clip quick_gelu
_RESAMPLE = {2: "bilinear", 3: "bicubic"}  # PIL resample codes
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_RENAMES = (  # HF key fragment -> open_clip, applied in order
    ("text_model.embeddings.token_embedding.", "token_embedding."),
    ("text_model.embeddings.position_embedding.weight", "positional_embedding"),
    ("text_model.encoder.layers.", "transformer.resblocks."),
    ("text_model.final_layer_norm.", "ln_final."),
    ("vision_model.embeddings.class_embedding", "visual.class_embedding"),
    ("vision_model.embeddings.patch_embedding.", "visual.conv1."),
    ("vision_model.embeddings.position_embedding.weight", "visual.positional_embedding"),
    ("vision_model.pre_layrnorm.", "visual.ln_pre."),
    ("vision_model.encoder.layers.", "visual.transformer.resblocks."),
    ("vision_model.post_layernorm.", "visual.ln_post."),
    (".self_attn.out_proj.", ".attn.out_proj."),
    (".layer_norm1.", ".ln_1."),
    (".layer_norm2.", ".ln_2."),
    (".mlp.fc1.", ".mlp.c_fc."),
    (".mlp.fc2.", ".mlp.c_proj."),
)


@dataclass
class HfCheckpoint:
    """An HF CLIPModel folder in open_clip's terms: what ``loading.load_clip`` builds and loads."""

    model_cfg: dict[str, Any]  # an open_clip CLIP model config
    quick_gelu: bool
    state_dict: dict[str, torch.Tensor]  # in open_clip CLIP's layout
    preprocess: dict[str, Any]  # open_clip preprocess_cfg keys
    family: dict[str, Any] = field(default_factory=dict)  # tokenizer fields (``completion.text_family``)
    build: Callable[[], Any] | None = None  # builds the model where ``model_cfg`` cannot (SigLIP folders)


def read_hf_clip(folder: Path) -> HfCheckpoint:
    """Read an HF CLIPModel (or SigLIP, ``hf_siglip``) folder: the open_clip config, renamed weights and
    preprocessing (no model built)."""
    config = json.loads((folder / "config.json").read_text())
    if config.get("model_type", "clip") != "clip":
        raise ValueError(f"Hugging Face model type {config['model_type']!r} in {folder} is not supported "
                         "(clip, siglip or siglip2)")
    return HfCheckpoint(
        model_cfg=open_clip_config(config),
        quick_gelu=_quick_gelu(config),
        state_dict=convert_state_dict(read_hf_weights(folder)),
        preprocess=read_preprocess(folder),
    )


def open_clip_config(config: dict[str, Any]) -> dict[str, Any]:
    """An open_clip model config equivalent to an HF ``CLIPConfig`` dict."""
    text = {**_TEXT_DEFAULTS, **config.get("text_config", {})}
    vision = {**_VISION_DEFAULTS, **config.get("vision_config", {})}
    return {
        "embed_dim": int(config.get("projection_dim", 512)),
        "vision_cfg": {
            "image_size": vision["image_size"], "patch_size": vision["patch_size"],
            "width": vision["hidden_size"], "layers": vision["num_hidden_layers"],
            "head_width": vision["hidden_size"] // vision["num_attention_heads"],
            "mlp_ratio": vision["intermediate_size"] / vision["hidden_size"],
            "norm_kwargs": {"eps": vision["layer_norm_eps"]},
        },
        "text_cfg": {
            "context_length": text["max_position_embeddings"], "vocab_size": text["vocab_size"],
            "width": text["hidden_size"], "heads": text["num_attention_heads"], "layers": text["num_hidden_layers"],
            "mlp_ratio": text["intermediate_size"] / text["hidden_size"],
            "norm_kwargs": {"eps": text["layer_norm_eps"]},
        },
    }


def _quick_gelu(config: dict[str, Any]) -> bool:
    acts = {
        {**defaults, **config.get(part, {})}["hidden_act"]
        for part, defaults in (("text_config", _TEXT_DEFAULTS), ("vision_config", _VISION_DEFAULTS))
    }
    if len(acts) != 1 or not acts <= _ACTIVATIONS.keys():
        raise ValueError(f"Hugging Face CLIP activation {sorted(acts)} is not supported (quick_gelu or gelu)")
    return _ACTIVATIONS[acts.pop()]


def read_hf_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The state dict of a Hugging Face folder (safetensors, else a torch pickle read weights-only)."""
    import torch

    for name in _WEIGHT_FILES:
        path = folder / name
        if path.is_file():
            if path.suffix == ".safetensors":
                from safetensors.torch import load_file

                return load_file(str(path), device="cpu")
            return dict(torch.load(str(path), map_location="cpu", weights_only=True))
    raise NotFound(f"no weights ({' or '.join(_WEIGHT_FILES)}) in Hugging Face CLIP folder {folder}")


def convert_state_dict(hf: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename and reshape an HF CLIPModel state dict into open_clip CLIP's layout."""
    import torch

    out: dict[str, torch.Tensor] = {}
    qkv: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in hf.items():
        if key.endswith("position_ids"):
            continue
        if key == "visual_projection.weight":
            out["visual.proj"] = value.T.contiguous()
            continue
        if key == "text_projection.weight":
            out["text_projection"] = value.T.contiguous()
            continue
        for old, new in _RENAMES:
            key = key.replace(old, new)
        head, sep, tail = key.partition(".self_attn.")
        if sep:  # q_proj.weight -> collected, concatenated below
            part, kind = tail.split("_proj.")
            qkv.setdefault(f"{head}.attn.in_proj_{kind}", {})[part] = value
            continue
        out[key] = value
    for key, parts in qkv.items():
        out[key] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    return out


def read_preprocess(folder: Path) -> dict[str, Any]:
    """mean, std, size and interpolation from ``preprocessor_config.json`` (open_clip's key names)."""
    path = folder / "preprocessor_config.json"
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    out: dict[str, Any] = {"resize_mode": "shortest"}
    if "image_mean" in data:
        out["mean"] = tuple(data["image_mean"])
    if "image_std" in data:
        out["std"] = tuple(data["image_std"])
    resample = data.get("resample")
    if resample is not None:
        if resample not in _RESAMPLE:
            raise ValueError(f"{path}: resample {resample} is not supported (2 bilinear or 3 bicubic)")
        out["interpolation"] = _RESAMPLE[resample]
    return out
