"""Loading every checkpoint format clipserve accepts gives the same model as the one saved.

Each format is written here from a seeded random-init tiny CLIP (the format is what is tested, so the
model is small): open_clip state dicts (safetensors, .pt with "state_dict" and "module.", .bin), an
fp16 repository entry, OpenAI state dicts and TorchScript archives, and Hugging Face CLIPModel folders
(compared against transformers itself). No network: pretrained tags are exercised with open_clip's
download function replaced by a local file.
"""

from __future__ import annotations

import ast
import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import pytest
import torch
from safetensors.torch import save_file

import service.clip as clip_package
from service.clip.loading import fingerprint, load_clip
from service.clip.model_config import OPENAI_MEAN, ModelConfig, resolve_model, write_config
from service.errors import NotFound

# heads = width / 64 and QuickGELU, so OpenAI's architecture inference rebuilds it too.
TINY_VIT: dict[str, Any] = {
    "embed_dim": 32,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 64, "layers": 2, "head_width": 64},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 2},
}
TEXTS = ["a photo of a cat", "", "dog " * 40, "an ümlaut and 日本語", "x"]


def embed(model: Any, pixels: np.ndarray, tokens: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """open_clip's own normalised image and text embeddings of ``model``."""
    with torch.inference_mode():
        images = model.encode_image(torch.from_numpy(pixels), normalize=True).numpy()
        texts = model.encode_text(tokens, normalize=True).numpy()
    return images, texts


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tiny")
    (out / "arch.json").write_text(json.dumps(TINY_VIT))
    return out


def tiny(folder: Path, **fields: Any) -> ModelConfig:
    return ModelConfig(name="tiny", architecture="tiny-vit", arch_config="arch.json", path=folder, **fields)


@pytest.fixture(scope="module")
def inputs() -> tuple[np.ndarray, torch.Tensor]:
    pixels = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
    return pixels, open_clip.tokenize(TEXTS)


@pytest.fixture(scope="module")
def reference(folder: Path) -> tuple[Any, ModelConfig]:
    return load_clip(tiny(folder, seed=3))


@pytest.fixture(scope="module")
def expected(reference: tuple[Any, ModelConfig], inputs: tuple[np.ndarray, torch.Tensor]) -> tuple[np.ndarray, ...]:
    return embed(reference[0], *inputs)


def assert_same(model: Any, inputs: tuple[np.ndarray, torch.Tensor], expected: tuple[np.ndarray, ...]) -> None:
    images, texts = embed(model, *inputs)
    np.testing.assert_array_equal(images, expected[0])
    np.testing.assert_array_equal(texts, expected[1])


def test_random_init_is_seeded_like_open_clip(folder: Path, reference: tuple[Any, ModelConfig]) -> None:
    torch.manual_seed(3)
    theirs = open_clip.CLIP(**TINY_VIT).state_dict()
    ours = reference[0].state_dict()
    assert theirs.keys() == ours.keys()
    assert all(torch.equal(theirs[k], ours[k]) for k in ours)
    again, _ = load_clip(tiny(folder, seed=3))
    other, _ = load_clip(tiny(folder, seed=4))
    config = reference[1]
    assert fingerprint(config, again.state_dict()) == fingerprint(config, ours)
    assert fingerprint(config, other.state_dict()) != fingerprint(config, ours)


def test_loader_completes_the_config(reference: tuple[Any, ModelConfig]) -> None:
    model, config = reference
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert (config.embed_dim, config.image_size, config.context_length) == (32, 32, 77)
    assert config.logit_scale == pytest.approx(1 / 0.07, rel=1e-6)
    assert config.mean == pytest.approx(OPENAI_MEAN) and config.interpolation == "bicubic"
    assert config.precision == "fp32"


def _save_open_clip(state: dict[str, torch.Tensor], path: Path, style: str) -> None:
    if style == "safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    elif style == "wrapped":  # a training checkpoint: {"state_dict": DDP "module."-prefixed weights}
        torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    else:
        torch.save(state, path)


@pytest.mark.parametrize(
    ("style", "filename"), [("safetensors", "w.safetensors"), ("wrapped", "epoch_3.pt"), ("plain", "model.bin")]
)
def test_open_clip_checkpoints_load_exactly(
    folder: Path, reference: tuple[Any, ModelConfig], inputs: Any, expected: Any, style: str, filename: str
) -> None:
    _save_open_clip(reference[0].state_dict(), folder / filename, style)
    model, _ = load_clip(tiny(folder, weights=filename))
    assert_same(model, inputs, expected)


def test_fp16_repository_entry_upcasts(tmp_path: Path, reference: tuple[Any, ModelConfig], inputs: Any) -> None:
    entry = tmp_path / "models" / "tiny-entry"
    entry.mkdir(parents=True)
    (entry / "arch.json").write_text(json.dumps(TINY_VIT))
    half = {k: v.half() for k, v in reference[0].state_dict().items()}
    save_file(half, str(entry / "weights.safetensors"))
    mean = (0.5, 0.5, 0.5)
    write_config(ModelConfig(name="tiny-entry", architecture="tiny-vit", arch_config="arch.json",
                             weights="weights.safetensors", image_size=32, mean=mean), entry)
    model, config = load_clip(resolve_model("tiny-entry", tmp_path / "models"))
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert config.mean == mean  # the entry's own preprocessing wins
    rounded = copy.deepcopy(reference[0])
    rounded.load_state_dict({k: v.float() for k, v in half.items()})
    assert_same(model, inputs, embed(rounded, *inputs))


def test_openai_state_dict_infers_the_architecture(
    folder: Path, reference: tuple[Any, ModelConfig], inputs: Any, expected: Any
) -> None:
    torch.save(reference[0].state_dict(), folder / "openai-style.pt")
    model, config = load_clip(ModelConfig(name="o", architecture="openai", weights=str(folder / "openai-style.pt")))
    assert (config.embed_dim, config.image_size) == (32, 32)
    assert_same(model, inputs, expected)


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
@pytest.mark.parametrize("architecture", ["openai", "tiny-vit"])
def test_openai_torchscript_archive(
    folder: Path, reference: tuple[Any, ModelConfig], inputs: Any, expected: Any, architecture: str
) -> None:
    path = folder / "jit.pt"
    if not path.exists():
        scripted = copy.deepcopy(reference[0])
        del scripted.context_length, scripted.vocab_size  # plain ints here, tensors in OpenAI's archives
        for key, value in (("input_resolution", 32), ("context_length", 77), ("vocab_size", 49408)):
            scripted.register_buffer(key, torch.tensor(value))
        torch.jit.save(torch.jit.script(scripted), str(path))
    config = ModelConfig(name="j", architecture=architecture, weights="jit.pt", path=folder)
    if architecture != "openai":
        config = tiny(folder, weights="jit.pt")
    model, _ = load_clip(config)
    assert_same(model, inputs, expected)


def test_open_clip_config_layout_carries_preprocessing(folder: Path) -> None:
    (folder / "open_clip_config.json").write_text(json.dumps({
        "model_cfg": TINY_VIT,
        "preprocess_cfg": {"mean": [0.1, 0.2, 0.3], "std": [0.4, 0.5, 0.6], "interpolation": "bilinear"},
    }))
    _, config = load_clip(ModelConfig(name="l", architecture="x", arch_config="open_clip_config.json", path=folder))
    assert config.mean == (0.1, 0.2, 0.3) and config.std == (0.4, 0.5, 0.6)
    assert config.interpolation == "bilinear"


def test_pretrained_tag_downloads_through_open_clip(
    folder: Path, reference: tuple[Any, ModelConfig], inputs: Any, expected: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkpoint = folder / "downloaded.safetensors"
    save_file(reference[0].state_dict(), str(checkpoint))
    tag_cfg = {"url": "https://example.invalid/w.pt", "quick_gelu": True, "mean": (0.3, 0.3, 0.3),
               "std": (0.2, 0.2, 0.2), "interpolation": "bilinear", "resize_mode": "shortest"}
    calls: list[Any] = []
    monkeypatch.setattr(open_clip, "get_pretrained_cfg", lambda arch, tag: tag_cfg if tag == "mytag" else {})
    monkeypatch.setattr(open_clip, "download_pretrained",
                        lambda cfg, cache_dir=None: calls.append((cfg, cache_dir)) or str(checkpoint))
    no_gelu = {**TINY_VIT, "quick_gelu": False}  # the tag's quick_gelu must switch it on
    (folder / "arch-gelu.json").write_text(json.dumps(no_gelu))
    config = ModelConfig(name="t", architecture="tiny-vit", arch_config="arch-gelu.json", weights="mytag", path=folder)
    model, completed = load_clip(config, cache_dir="/tmp/cache")
    assert calls == [(tag_cfg, "/tmp/cache")]
    assert completed.mean == (0.3, 0.3, 0.3) and completed.interpolation == "bilinear"
    assert_same(model, inputs, expected)


def test_unknown_things_are_named(folder: Path) -> None:
    with pytest.raises(NotFound, match="unknown open_clip architecture 'ViT-Nope'"):
        load_clip(ModelConfig(name="x", architecture="ViT-Nope"))
    with pytest.raises(NotFound, match=r"'nope'.*known tags: .*openai"):
        load_clip(ModelConfig(name="x", architecture="ViT-B-32", weights="nope"))
    with pytest.raises(NotFound, match="architecture file"):
        load_clip(ModelConfig(name="x", architecture="a", arch_config="missing.json", path=folder))
    with pytest.raises(NotFound, match="no Hugging Face CLIP folder"):
        load_clip(ModelConfig(name="x", architecture="hf", weights=f"hf:{folder / 'nothing'}"))


def test_explicit_image_size_must_match_the_model(folder: Path) -> None:
    with pytest.raises(ValueError, match="image_size=224 but the model has 32"):
        load_clip(tiny(folder, image_size=224))


def test_fingerprint_covers_weights_and_preprocessing(folder: Path, reference: tuple[Any, ModelConfig]) -> None:
    config = reference[1]
    (folder / "a.bin").write_bytes(b"weights a")
    (folder / "b.bin").write_bytes(b"weights b")
    first = fingerprint(config, folder / "a.bin")
    assert first == fingerprint(config, str(folder / "a.bin")) and len(first) == 16
    assert first != fingerprint(config, folder / "b.bin")
    assert first != fingerprint(config.model_copy(update={"mean": (0.5, 0.5, 0.5)}), folder / "a.bin")


@pytest.fixture(scope="module", params=[("quick_gelu", 1e-5), ("gelu", 1e-6)], ids=["quick_gelu", "gelu"])
def hf_folder(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """A small random transformers CLIPModel saved with save_pretrained, and the model itself."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    act, eps = request.param
    tower = {"hidden_size": 48, "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 3,
             "hidden_act": act, "layer_norm_eps": eps}
    config = CLIPConfig(text_config=tower, vision_config={**tower, "image_size": 32, "patch_size": 8},
                        projection_dim=24)
    torch.manual_seed(5)
    model = CLIPModel(config).eval()
    with torch.no_grad():  # HF initialises LayerNorms to 1/0 and logit_scale to a constant: vary them
        for name, p in model.named_parameters():
            if "norm" in name or "layrnorm" in name or name == "logit_scale":
                p.add_(0.1 * torch.randn_like(p))
    out = tmp_path_factory.mktemp(f"hf-{act}")
    model.save_pretrained(out)
    CLIPImageProcessor(image_mean=[0.5, 0.4, 0.3], image_std=[0.2, 0.25, 0.3], size={"shortest_edge": 32},
                       crop_size={"height": 32, "width": 32}, resample=2).save_pretrained(out)
    return out, model


def test_hugging_face_folder_matches_transformers(
    hf_folder: tuple[Path, Any], inputs: tuple[np.ndarray, torch.Tensor], tmp_path: Path
) -> None:
    folder, hf_model = hf_folder
    config = resolve_model(str(folder), tmp_path)
    assert config.architecture == "hf"
    model, completed = load_clip(config)
    pixels, tokens = inputs
    with torch.inference_mode():
        hf_images = hf_model.get_image_features(pixel_values=torch.from_numpy(pixels)).pooler_output
        hf_texts = hf_model.get_text_features(input_ids=tokens).pooler_output
        hf_scale = float(hf_model.logit_scale.exp())
    images, texts = embed(model, pixels, tokens)
    np.testing.assert_allclose(images, torch.nn.functional.normalize(hf_images, dim=-1).numpy(), atol=1e-5)
    np.testing.assert_allclose(texts, torch.nn.functional.normalize(hf_texts, dim=-1).numpy(), atol=1e-5)
    assert completed.logit_scale == pytest.approx(hf_scale, rel=1e-6)
    assert (completed.embed_dim, completed.image_size, completed.context_length) == (24, 32, 77)
    assert completed.mean == pytest.approx((0.5, 0.4, 0.3)) and completed.std == pytest.approx((0.2, 0.25, 0.3))
    assert completed.interpolation == "bilinear"


def test_hugging_face_folder_without_weights(tmp_path: Path, hf_folder: tuple[Path, Any]) -> None:
    (tmp_path / "config.json").write_text((hf_folder[0] / "config.json").read_text())
    with pytest.raises(NotFound, match="no weights"):
        load_clip(ModelConfig(name="x", architecture="hf", weights=f"hf:{tmp_path}"))


def test_hf_clip_reads_and_loading_builds_without_an_import_cycle() -> None:
    """hf_clip and hf_siglip convert the folder only; loading imports them (lazily), never the other way round."""
    imported: dict[str, set[str]] = {}
    for name in ("hf_clip", "hf_siglip", "loading"):
        tree = ast.parse((Path(clip_package.__file__).parent / f"{name}.py").read_text())
        imported[name] = {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        imported[name] |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert "service.clip.hf_siglip" in imported["loading"] and "service.clip.hf_clip" in imported["hf_siglip"]
    for converter in ("hf_clip", "hf_siglip"):
        assert not any(m.startswith("service.clip.loading") for m in imported[converter])


def test_openai_architecture_needs_a_checkpoint() -> None:
    with pytest.raises(NotFound, match="architecture 'openai' is read off a checkpoint"):
        load_clip(ModelConfig(name="o", architecture="openai"))


def test_unsupported_preprocessing_is_named(folder: Path) -> None:
    longest = {"model_cfg": TINY_VIT, "preprocess_cfg": {"resize_mode": "longest"}}
    (folder / "longest.json").write_text(json.dumps(longest))
    with pytest.raises(ValueError, match="resize_mode 'longest' is not supported"):
        load_clip(ModelConfig(name="s", architecture="x", arch_config="longest.json", path=folder))
