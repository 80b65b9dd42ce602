"""Hugging Face ``SiglipModel`` / ``Siglip2Model`` folders (``save_pretrained``, tiny configs, seeded
random weights, a tokenizer saved beside them) load and embed within 1e-5 of transformers' own
``get_image_features`` / ``get_text_features``, and get their own tokenizer and sigmoid scoring."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.clip.loading import load_clip
from service.clip.model_config import ModelConfig, resolve_model
from service.clip.text_tokenizers import load_tokenizer
from tests.clip.tokenizer_files import make_tokenizer_folder

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
TOLERANCE = 1e-5
SIZE, PATCH, CONTEXT = 32, 8, 64
TEXTS = ["a photo of a cat", "A DOG!!", "", "word " * 100, "ünïcödé 😀"]


def _configs(kind: str) -> Any:
    text = {"vocab_size": 600, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 4, "max_position_embeddings": CONTEXT, "pad_token_id": 2,
            "projection_size": 48}
    vision = {"hidden_size": 48, "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4,
              "patch_size": PATCH}
    if kind == "siglip":
        return transformers.SiglipConfig(text_config=text, vision_config={**vision, "image_size": SIZE})
    return transformers.Siglip2Config(text_config=text, vision_config={**vision, "num_patches": (SIZE // PATCH) ** 2})


def _features(out: Any) -> Any:
    return out if isinstance(out, torch.Tensor) else out.pooler_output


@pytest.fixture(scope="module", params=["siglip", "siglip2"])
def folder(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, Any]:
    kind = request.param
    torch.manual_seed(0)
    model_class = transformers.SiglipModel if kind == "siglip" else transformers.Siglip2Model
    model = model_class(_configs(kind)).eval()
    with torch.no_grad():  # random init leaves the bias and scale at constants: make them ours to find
        model.logit_bias.fill_(-1.25)
        model.logit_scale.fill_(2.0)
    out = tmp_path_factory.mktemp(kind)
    model.save_pretrained(out)
    transformers.SiglipImageProcessor(size={"height": SIZE, "width": SIZE}).save_pretrained(out)
    make_tokenizer_folder(out, "unigram")
    return kind, out, model


def test_embeddings_equal_transformers(folder: tuple[str, Path, Any]) -> None:
    kind, path, reference = folder
    model, config = load_clip(resolve_model(str(path), path.parent))
    pixels = torch.randn(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    tokens = torch.from_numpy(load_tokenizer(config)(TEXTS))
    assert int(tokens.max()) < 600 and tokens.shape == (len(TEXTS), CONTEXT)
    with torch.no_grad():
        if kind == "siglip":
            want_images = _features(reference.get_image_features(pixel_values=pixels))
        else:  # SigLIP 2 reads patches flattened (row, column, channel), with a mask and the grid's shape
            grid = SIZE // PATCH
            patches = pixels.reshape(3, 3, grid, PATCH, grid, PATCH).permute(0, 2, 4, 3, 5, 1)
            patches = patches.reshape(3, grid * grid, -1)
            want_images = _features(reference.get_image_features(
                pixel_values=patches, pixel_attention_mask=torch.ones(3, grid * grid, dtype=torch.long),
                spatial_shapes=torch.tensor([[grid, grid]] * 3)))
        want_texts = _features(reference.get_text_features(input_ids=tokens))
        got_images, got_texts = model.encode_image(pixels), model.encode_text(tokens)
    assert float((got_images - want_images).abs().max()) <= TOLERANCE
    assert float((got_texts - want_texts).abs().max()) <= TOLERANCE


def test_config_carries_tokenizer_and_sigmoid_scoring(folder: tuple[str, Path, Any]) -> None:
    _, path, _ = folder
    _, config = load_clip(ModelConfig(name="s", architecture="hf", weights=f"hf:{path}"))
    assert config.scoring == "sigmoid" and config.logit_bias == pytest.approx(-1.25)
    assert config.logit_scale == pytest.approx(float(np.exp(2.0)), rel=1e-6)
    assert config.tokenizer == str(path.resolve()) and config.tokenizer_clean == "canonicalize"
    assert config.context_length == CONTEXT and config.image_size == SIZE


def test_an_unsupported_activation_names_itself(folder: tuple[str, Path, Any], tmp_path: Path) -> None:
    import json
    import shutil

    _, path, _ = folder
    copy = tmp_path / "copy"
    shutil.copytree(path, copy)
    data = json.loads((copy / "config.json").read_text())
    data["text_config"]["hidden_act"] = "swish"
    (copy / "config.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"text_config\.hidden_act 'swish' is not supported"):
        load_clip(ModelConfig(name="s", architecture="hf", weights=f"hf:{copy}"))


def test_served_through_the_real_server(folder: tuple[str, Path, Any], tmp_path: Path) -> None:
    """``--model <folder>``: texts embedded by the server equal transformers' normalised text features,
    tokenized by the folder's own tokenizer; ``/models`` says sigmoid with the folder's bias."""
    from service.client import ClipClient
    from tests.api.server_process import ServerProcess

    _, path, reference = folder
    server = ServerProcess(tmp_path / "server.log", "--model", str(path), "--backend", "torch", "--no-warmup")
    try:
        server.wait_ready()
        with ClipClient(server.url) as client:
            got = client.embed_texts(TEXTS)
            (info,) = client.models()
    finally:
        server.stop()
    _, config = load_clip(ModelConfig(name="s", architecture="hf", weights=f"hf:{path}"))
    tokens = torch.from_numpy(load_tokenizer(config)(TEXTS))
    with torch.no_grad():
        want = torch.nn.functional.normalize(_features(reference.get_text_features(input_ids=tokens)), dim=-1)
    assert np.abs(got - want.numpy()).max() <= TOLERANCE
    assert info.scoring == "sigmoid" and info.logit_bias == pytest.approx(-1.25) and info.context_length == CONTEXT
