"""Load a Hugging Face ``SiglipModel`` or ``Siglip2Model`` folder as an open_clip ``CustomTextCLIP``.

The text tower is open_clip's ``TextTransformer`` as open_clip builds SigLIP's (no causal mask, the last
position pooled, a projection with bias, tanh-approximated GELU); the image tower is timm's
``VisionTransformer`` as timm builds SigLIP's (no class token, ``map`` pooling: a latent query attends
over the patches), sized from the folder's ``config.json`` and with the folder's activation (HF SigLIP
uses ``gelu_pytorch_tanh`` in both towers, where open_clip's timm SigLIP uses the exact GELU). HF
parameter names are renamed to open_clip's / timm's; the attention pooling head's packed projection is
split into timm's ``q`` and ``kv``. SigLIP 2's patch embedding is a ``Linear`` over patches flattened
(row, column, channel); at the folder's own image size it is the convolution of SigLIP, reshaped (and
the position embedding, resized to the same grid, is unchanged), so images are served at that size.

Only the loader imports this module (it imports torch). The tokenizer files saved beside the model
(``tokenizer.json`` ...) become the model's tokenizer, cleaned as open_clip cleans SigLIP's
(``canonicalize``).
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any

import torch

from service.clip.hf_clip import HfCheckpoint, read_hf_clip, read_hf_weights, read_preprocess

SIGLIP_TYPES = ("siglip", "siglip2")
_ACTIVATIONS = {"gelu_pytorch_tanh": "tanh", "gelu": "none"}  # -> nn.GELU(approximate=...)
_TEXT_DEFAULTS = {"vocab_size": 32000, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                  "num_attention_heads": 12, "max_position_embeddings": 64, "hidden_act": "gelu_pytorch_tanh",
                  "layer_norm_eps": 1e-6}
_VISION_DEFAULTS = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
                    "image_size": 224, "patch_size": 16, "num_patches": 256, "hidden_act": "gelu_pytorch_tanh",
                    "layer_norm_eps": 1e-6}
_RENAMES = (
    ("text_model.embeddings.token_embedding.", "text.token_embedding."),
    ("text_model.embeddings.position_embedding.weight", "text.positional_embedding"),
    ("text_model.encoder.layers.", "text.transformer.resblocks."),
    ("text_model.final_layer_norm.", "text.ln_final."),
    ("text_model.head.", "text.text_projection."),
    ("vision_model.embeddings.patch_embedding.", "visual.trunk.patch_embed.proj."),
    ("vision_model.encoder.layers.", "visual.trunk.blocks."),
    ("vision_model.post_layernorm.", "visual.trunk.norm."),
    ("vision_model.head.attention.out_proj.", "visual.trunk.attn_pool.proj."),
    ("vision_model.head.layernorm.", "visual.trunk.attn_pool.norm."),
    ("vision_model.head.mlp.", "visual.trunk.attn_pool.mlp."),
)
_TEXT_LAYER = ((".layer_norm1.", ".ln_1."), (".layer_norm2.", ".ln_2."), (".self_attn.out_proj.", ".attn.out_proj."),
               (".mlp.fc1.", ".mlp.c_fc."), (".mlp.fc2.", ".mlp.c_proj."))
_VISION_LAYER = ((".layer_norm1.", ".norm1."), (".layer_norm2.", ".norm2."), (".self_attn.out_proj.", ".attn.proj."))


def is_siglip(config: dict[str, Any]) -> bool:
    """True for an HF SigLIP / SigLIP 2 ``config.json``."""
    return config.get("model_type") in SIGLIP_TYPES


def _parts(config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    text = {**_TEXT_DEFAULTS, **config.get("text_config", {})}
    vision = {**_VISION_DEFAULTS, **config.get("vision_config", {})}
    text["projection_size"] = text.get("projection_size") or text["hidden_size"]  # transformers' default
    if text["projection_size"] != vision["hidden_size"]:
        raise ValueError(f"Hugging Face SigLIP image features ({vision['hidden_size']}, vision_config.hidden_size) and "
                         f"text features ({text['projection_size']}, text_config.projection_size) differ in size")
    for part, values in (("text_config", text), ("vision_config", vision)):
        if values["hidden_act"] not in _ACTIVATIONS:
            raise ValueError(f"Hugging Face SigLIP {part}.hidden_act {values['hidden_act']!r} is not supported "
                             f"({', '.join(_ACTIVATIONS)})")
    return text, vision


def read_hf_folder(folder: Path) -> HfCheckpoint:
    """Read a Hugging Face model folder: SigLIP / SigLIP 2 here, CLIP by ``hf_clip``."""
    config = json.loads((folder / "config.json").read_text())
    return read_hf_siglip(folder, config) if is_siglip(config) else read_hf_clip(folder)


def read_hf_siglip(folder: Path, config: dict[str, Any]) -> HfCheckpoint:
    """Read an HF SigLIP / SigLIP 2 folder: how to build the model, its renamed weights, preprocessing and tokenizer."""
    text, vision = _parts(config)
    siglip2 = config.get("model_type") == "siglip2"
    if siglip2:
        side = round(vision["num_patches"] ** 0.5)
        if side * side != vision["num_patches"]:
            raise ValueError(f"Hugging Face SigLIP 2 num_patches {vision['num_patches']} is not a square grid")
        vision["image_size"] = side * vision["patch_size"]
    family: dict[str, Any] = {"tokenizer_clean": "canonicalize"}
    if (folder / "tokenizer.json").is_file():
        family["tokenizer"] = str(folder.resolve())
    preprocess = {**read_preprocess(folder), "resize_mode": "squash"}  # SiglipImageProcessor: to (size, size)
    return HfCheckpoint(
        model_cfg={}, quick_gelu=False,
        state_dict=convert_state_dict(read_hf_weights(folder), int(vision["patch_size"]), siglip2),
        preprocess=preprocess, family=family, build=partial(build_siglip, text, vision),
    )


def build_siglip(text: dict[str, Any], vision: dict[str, Any]) -> Any:
    """An open_clip CustomTextCLIP with SigLIP's towers at these HF sizes (weights to be loaded)."""
    import open_clip
    from timm.models.vision_transformer import VisionTransformer

    width = int(text["hidden_size"])
    text_cfg = {
        "context_length": text["max_position_embeddings"], "vocab_size": text["vocab_size"], "width": width,
        "heads": text["num_attention_heads"], "layers": text["num_hidden_layers"],
        "mlp_ratio": text["intermediate_size"] / width, "no_causal_mask": True, "proj_bias": True,
        "pool_type": "last", "norm_kwargs": {"eps": text["layer_norm_eps"]},
        "act_kwargs": {"approximate": _ACTIVATIONS[text["hidden_act"]]},
    }
    tiny_vision = {"image_size": vision["patch_size"], "patch_size": vision["patch_size"], "width": 8, "layers": 1,
                   "head_width": 8}  # replaced below: only the text tower is open_clip's own
    model = open_clip.CustomTextCLIP(embed_dim=int(text["projection_size"]), vision_cfg=tiny_vision,
                                     text_cfg=text_cfg, init_logit_bias=0.0)
    d = int(vision["hidden_size"])
    trunk = VisionTransformer(
        img_size=vision["image_size"], patch_size=vision["patch_size"], embed_dim=d,
        depth=vision["num_hidden_layers"], num_heads=vision["num_attention_heads"],
        mlp_ratio=vision["intermediate_size"] / d, class_token=False, global_pool="map", num_classes=0,
        norm_layer=partial(torch.nn.LayerNorm, eps=vision["layer_norm_eps"]),
        act_layer=partial(torch.nn.GELU, approximate=_ACTIVATIONS[vision["hidden_act"]]),
    )
    model.visual = _Visual(trunk, int(vision["image_size"]))
    return model


class _Visual(torch.nn.Module):
    """timm's SigLIP trunk with the ``image_size`` open_clip's towers report."""

    def __init__(self, trunk: torch.nn.Module, size: int) -> None:
        super().__init__()
        self.trunk = trunk
        self.image_size = (size, size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x)  # type: ignore[no-any-return]


def convert_state_dict(hf: dict[str, torch.Tensor], patch: int, siglip2: bool) -> dict[str, torch.Tensor]:
    """Rename and reshape an HF SigLIP state dict into the layout ``build_siglip``'s model loads."""
    out: dict[str, torch.Tensor] = {}
    packed: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in hf.items():
        if key.endswith("position_ids"):
            continue
        if key == "vision_model.embeddings.position_embedding.weight":
            out["visual.trunk.pos_embed"] = value.unsqueeze(0)
            continue
        if key in ("logit_scale", "logit_bias"):  # (1,) in HF, scalars in open_clip
            out[key] = value.reshape(())
            continue
        if key == "vision_model.head.probe":
            out["visual.trunk.attn_pool.latent"] = value
            continue
        if key.startswith("vision_model.head.attention.in_proj_"):
            kind = key.rsplit("_", 1)[1]
            d = value.shape[0] // 3
            out[f"visual.trunk.attn_pool.q.{kind}"], out[f"visual.trunk.attn_pool.kv.{kind}"] = value[:d], value[d:]
            continue
        if siglip2 and key == "vision_model.embeddings.patch_embedding.weight":
            value = value.reshape(value.shape[0], patch, patch, -1).permute(0, 3, 1, 2).contiguous()
        for old, new in _RENAMES:
            key = key.replace(old, new)
        for old, new in _TEXT_LAYER if key.startswith("text.") else _VISION_LAYER:
            key = key.replace(old, new)
        head, sep, tail = key.partition(".self_attn.")
        if sep:  # q/k/v projections: packed below
            part, kind = tail.split("_proj.")
            target = f"{head}.attn.in_proj_{kind}" if key.startswith("text.") else f"{head}.attn.qkv.{kind}"
            packed.setdefault(target, {})[part] = value
            continue
        out[key] = value
    for key, parts in packed.items():
        out[key] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    return out
