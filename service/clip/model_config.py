"""The model repository: ``models/<name>/config.json`` keeps preprocessing values next to the weights.

A model is named either by a repository entry (``clipserve-demo``), or ``ARCH:PRETRAINED`` as in
open_clip (``ViT-B-32:openai``), or ``ARCH:/path/to/checkpoint``, or a Hugging Face ``CLIPModel``
directory. ``resolve_model`` turns each into a ``ModelConfig``.
"""

from __future__ import annotations

import difflib
import importlib.util
import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from service.errors import NotFound

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
CONFIG_FILE = "config.json"
HUB_PREFIX = "hf-hub:"  # a tokenizer named by its Hugging Face Hub repository


class OnnxFiles(BaseModel):
    """Exported ONNX towers, relative to the model folder."""

    image: str = "onnx/image.onnx"
    text: str = "onnx/text.onnx"
    precision: Literal["fp32", "fp16", "int8"] = "fp32"


class ModelConfig(BaseModel):
    """One model's config: architecture, weights source and the preprocessing that goes with them."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    name: str = Field(description="The id clients use.")
    architecture: str = Field(description="open_clip architecture name (e.g. ViT-B-32).")
    arch_config: str | None = Field(
        None, description="A custom open_clip architecture JSON, relative to the model folder."
    )
    weights: str | None = Field(
        None,
        description="open_clip pretrained tag, or a checkpoint path (relative to the folder), "
        "or 'hf:<dir>' for a Hugging Face CLIPModel directory; None = random init (seeded).",
    )
    image_size: int = 224
    mean: tuple[float, float, float] = OPENAI_MEAN
    std: tuple[float, float, float] = OPENAI_STD
    interpolation: Literal["bicubic", "bilinear"] = "bicubic"
    resize_mode: Literal["shortest", "squash"] = "shortest"
    context_length: int = 77
    precision: Literal["fp32", "fp16", "bf16"] = "fp32"
    backend: Literal["auto", "torch", "onnx", "fake"] = Field(
        "auto", description="auto: ONNX Runtime, exported on first start (torch where the export fails); "
        "torch or onnx: that runtime only.",
    )
    embed_dim: int | None = Field(None, description="Embedding size (required for ONNX serving).")
    logit_scale: float | None = Field(None, description="exp(logit_scale) of the model (ONNX serving).")
    scoring: Literal["softmax", "sigmoid"] = Field(
        "softmax", description="How scores are made: softmax over labels (CLIP) or a sigmoid per label (SigLIP)."
    )
    logit_bias: float | None = Field(None, description="SigLIP's learned bias: sigmoid(logit_scale * cos + bias).")
    tokenizer: str | None = Field(
        None, description="Hugging Face tokenizer files: a folder (relative to the model folder) or "
        "'hf-hub:<repo>' (downloaded when online); None = CLIP's BPE tokenizer.",
    )
    tokenizer_clean: Literal["whitespace", "lower", "canonicalize"] = Field(
        "whitespace", description="open_clip's text cleaning before a Hugging Face tokenizer."
    )
    strip_sep_token: bool = Field(False, description="Replace the separator id by 0 (open_clip's option).")
    onnx: OnnxFiles | None = None
    seed: int = Field(0, description="Seed for random-init weights (tests and benchmarks).")
    path: Path | None = Field(None, description="The model folder (set when read from the repository).")

    def resolve(self, relative: str) -> Path:
        """A path relative to the model folder (absolute paths pass through)."""
        p = Path(relative)
        if p.is_absolute() or self.path is None:
            return p
        return self.path / p

    def local_tokenizer(self) -> Path | None:
        """The tokenizer folder this config names on disk, absolute; None for CLIP's BPE and hub names."""
        if self.tokenizer is None or self.tokenizer.startswith(HUB_PREFIX):
            return None
        return self.resolve(self.tokenizer).resolve()


def read_config(folder: Path) -> ModelConfig:
    """Read ``folder/config.json`` into a ModelConfig."""
    data = json.loads((folder / CONFIG_FILE).read_text())
    data["path"] = folder
    return ModelConfig.model_validate(data)


def write_config(config: ModelConfig, folder: Path) -> Path:
    """Write a ModelConfig to ``folder/config.json`` (the folder path itself is not stored)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / CONFIG_FILE
    out.write_text(config.model_dump_json(indent=2, exclude={"path"}, exclude_none=True) + "\n")
    return out


def resolve_model(name: str, model_dir: Path) -> ModelConfig:
    """Turn a model name into a ModelConfig.

    Order: a model repository entry ``model_dir/<name>``; a Hugging Face CLIPModel directory;
    ``ARCH:PRETRAINED`` or ``ARCH:/path`` (open_clip); a bare open_clip ARCH (random weights).
    Raises NotFound when nothing matches.
    """
    entry = model_dir / name
    local = Path(name)
    for folder in (entry, local):  # an HF folder (model_dir / an absolute path is that path) is no entry
        if (folder / CONFIG_FILE).is_file() and (folder / "preprocessor_config.json").exists():
            return ModelConfig(name=folder.name, architecture="hf", weights=f"hf:{folder.resolve()}")
    if (entry / CONFIG_FILE).is_file():
        return read_config(entry)
    if (local / CONFIG_FILE).is_file():
        return read_config(local)
    arch, _, weights = name.partition(":")
    if not arch:
        raise NotFound(f"unknown model {name!r}")
    if not weights:
        _check_architecture(arch, model_dir)
    return ModelConfig(name=name, architecture=arch, weights=weights or None)


def repository_entries(model_dir: Path) -> list[str]:
    """The model repository's entries: the folders of ``model_dir`` with a config.json."""
    if not model_dir.is_dir():
        return []
    return sorted(p.name for p in model_dir.iterdir() if (p / CONFIG_FILE).is_file())


def _check_architecture(arch: str, model_dir: Path) -> None:
    """A bare name that is no repository entry must be an open_clip architecture (checked when
    open_clip is importable); else a SettingError naming the entries and the closest architectures."""
    from service.config import SettingError

    known = _open_clip_models()
    if known is not None and arch in known:
        return
    if known is None and model_dir.is_dir():
        return  # no open_clip here to tell: the loader reports it
    if not model_dir.is_dir():
        raise SettingError("model_dir", f"the model repository folder {model_dir} does not exist "
                           f"(model {arch!r} is not an open_clip architecture either)")
    entries = ", ".join(repository_entries(model_dir)) or "none"
    closest = ", ".join(difflib.get_close_matches(arch, known or [], n=3, cutoff=0.4)) or "none"
    raise SettingError("model", f"not a model repository entry ({model_dir}/: {entries}) "
                       f"nor an open_clip architecture (closest: {closest})", value=arch)


def _open_clip_models() -> list[str] | None:
    """open_clip's architecture names; None where open_clip cannot be imported."""
    if importlib.util.find_spec("open_clip") is None:
        return None
    import open_clip

    return list(open_clip.list_models())
