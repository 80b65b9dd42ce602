"""Fixtures of the ONNX tests: a tiny random-weight model repository entry, exported once per session."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from service.clip.model_config import ModelConfig, write_config
from service.export import ExportOptions, export_model

TINY = "tiny"
# A small ViT CLIP (open_clip's CLIP class, causal text mask): exported in seconds, enough to test the
# serving paths. The parity of real architectures is tested on ViT-B-32, RN50 and the demo model.
TINY_ARCH = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def write_tiny(model_dir: Path, name: str = TINY, seed: int = 3) -> ModelConfig:
    """A repository entry ``name`` with the tiny architecture and random weights (torch backend)."""
    folder = model_dir / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "arch.json").write_text(json.dumps(TINY_ARCH))
    config = ModelConfig(name=name, architecture="tiny-vit", arch_config="arch.json", image_size=64, seed=seed,
                         backend="torch")
    write_config(config, folder)
    return config.model_copy(update={"path": folder})


@pytest.fixture(scope="session")
def tiny_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model repository with ``tiny`` (torch only) and ``tiny-onnx`` (its fp32 ONNX export)."""
    repo = tmp_path_factory.mktemp("onnx-repo")
    config = write_tiny(repo)
    export_model(config, repo / "tiny-onnx", "tiny-onnx", ExportOptions())
    return repo
