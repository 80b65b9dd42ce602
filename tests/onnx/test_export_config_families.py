"""An export's config.json keeps what the model's family needs to be served without torch: scoring, logit
scale and bias, and the tokenizer (a local folder made absolute when the export lives elsewhere)."""

from __future__ import annotations

from pathlib import Path

from service.clip.model_config import ModelConfig, OnnxFiles, read_config, write_config
from service.export.onnx import onnx_config


def test_export_config_keeps_scoring_bias_and_tokenizer(tmp_path: Path) -> None:
    source = tmp_path / "entry"
    (source / "tok").mkdir(parents=True)
    config = ModelConfig(name="sig", architecture="ViT-B-16-SigLIP", path=source, tokenizer="tok",
                         tokenizer_clean="canonicalize", context_length=64, scoring="sigmoid", logit_scale=117.3,
                         logit_bias=-12.9, embed_dim=768)
    out = tmp_path / "export"
    write_config(onnx_config(config, OnnxFiles(), "sig-onnx", out), out)
    again = read_config(out)
    assert (again.scoring, again.logit_scale, again.logit_bias) == ("sigmoid", 117.3, -12.9)
    assert again.tokenizer == str((source / "tok").resolve()) and again.tokenizer_clean == "canonicalize"
    assert again.backend == "onnx" and again.context_length == 64


def test_a_hub_tokenizer_stays_a_hub_name(tmp_path: Path) -> None:
    config = ModelConfig(name="sig2", architecture="ViT-B-16-SigLIP2", path=tmp_path / "a",
                         tokenizer="hf-hub:timm/ViT-B-16-SigLIP2")
    assert onnx_config(config, OnnxFiles(), "x", tmp_path / "b").tokenizer == "hf-hub:timm/ViT-B-16-SigLIP2"
