"""TorchBackend: the Backend protocol over a loaded open_clip model (CPU here; GPU tests marked ``gpu``)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch

from service.clip.model_config import ModelConfig
from service.errors import InvalidInput
from service.runtime.base import Backend
from service.runtime.torch_backend import TorchBackend

# A small ModifiedResNet CLIP (the image-tower family of RN50 and the demo model).
TINY_RN = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
TEXTS = ["a photo of a cat", "a dog", "a very long description of a scene " * 3]


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> ModelConfig:
    folder = tmp_path_factory.mktemp("tiny-rn")
    (folder / "arch.json").write_text(json.dumps(TINY_RN))
    return ModelConfig(name="tiny-rn", architecture="tiny-rn", arch_config="arch.json", path=folder, seed=7)


@pytest.fixture(scope="module")
def backend(config: ModelConfig) -> Iterator[TorchBackend]:
    loaded = TorchBackend(config)
    yield loaded
    loaded.close()


@pytest.fixture(scope="module")
def pixels() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((3, 3, 64, 64)).astype(np.float32)


def test_info_describes_the_model(backend: TorchBackend) -> None:
    assert isinstance(backend, Backend)
    info = backend.info
    assert (info.name, info.backend, info.precision, info.device) == ("tiny-rn", "torch", "fp32", "cpu")
    assert (info.dimension, info.image_size, info.context_length) == (32, 64, 77)
    assert info.logit_scale == pytest.approx(1 / 0.07, rel=1e-6)
    assert len(info.fingerprint) == 16 and int(info.fingerprint, 16) >= 0
    assert info.extra["text_trimming"] == "on" and info.extra["weights"] == "random (seed 7)"


def test_images_are_normalised_and_deterministic(backend: TorchBackend, pixels: np.ndarray) -> None:
    first = backend.encode_images(pixels)
    assert first.shape == (3, 32) and first.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1, atol=1e-6)
    np.testing.assert_array_equal(backend.encode_images(pixels), first)
    np.testing.assert_allclose(backend.encode_images(pixels[1:2]), first[1:2], atol=1e-6)  # rows independent


def test_texts_trimmed_or_full_width_agree_with_open_clip(backend: TorchBackend) -> None:
    tokens = open_clip.tokenize(TEXTS)
    with torch.inference_mode():
        expected = backend.model.encode_text(tokens, normalize=True).numpy()
    full = backend.encode_texts(tokens.numpy())
    longest = int((tokens != 0).sum(dim=1).max())
    trimmed = backend.encode_texts(tokens.numpy()[:, :longest])
    np.testing.assert_allclose(full, expected, atol=1e-6)
    np.testing.assert_allclose(trimmed, expected, atol=1e-6)
    np.testing.assert_array_equal(backend.encode_texts(tokens.numpy()), full)


def test_bad_batches_are_refused(backend: TorchBackend) -> None:
    with pytest.raises(InvalidInput, match=r"\(N, 3, 64, 64\)"):
        backend.encode_images(np.zeros((1, 3, 32, 32), np.float32))
    with pytest.raises(InvalidInput, match="1 <= L <= 77"):
        backend.encode_texts(np.zeros((1, 78), np.int64))
    with pytest.raises(InvalidInput):
        backend.encode_texts(np.zeros((5,), np.int64))
    assert backend.encode_images(np.zeros((0, 3, 64, 64), np.float32)).shape == (0, 32)
    assert backend.encode_texts(np.zeros((0, 5), np.int64)).shape == (0, 32)


def test_warmup_runs_each_batch_size(backend: TorchBackend) -> None:
    """Both towers run once per batch size given, texts at the full context length (the worst case)."""
    images: list[tuple[int, ...]] = []
    texts: list[tuple[int, ...]] = []
    hooks = [  # the towers' inputs: pixels (N, 3, S, S); token features (N, L, width) batch-first
        backend.model.visual.register_forward_pre_hook(lambda _, args: images.append(tuple(args[0].shape))),
        backend.model.transformer.register_forward_pre_hook(lambda _, args: texts.append(tuple(args[0].shape[:2]))),
    ]
    try:
        backend.warmup([1, 2])
    finally:
        for hook in hooks:
            hook.remove()
    assert images == [(1, 3, 64, 64), (2, 3, 64, 64)]
    assert texts == [(1, 77), (2, 77)]


def test_half_precision_falls_back_to_fp32_on_cpu(config: ModelConfig, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        half = TorchBackend(config, precision="fp16")
    assert half.info.precision == "fp32" and "using fp32" in caplog.text
    assert all(p.dtype == torch.float32 for p in half.model.parameters())
    half.close()


def test_threads_setting(config: ModelConfig) -> None:
    before = torch.get_num_threads()
    try:
        TorchBackend(config, threads=1).close()
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.gpu
@pytest.mark.parametrize(("precision", "min_cosine"), [("fp32", 0.99999), ("fp16", 0.999), ("bf16", 0.99)])
def test_gpu_precisions_agree_with_cpu(precision: str, min_cosine: float, tmp_path: Path) -> None:
    config = ModelConfig(name="vit", architecture="ViT-B-32", seed=0)
    cpu = TorchBackend(config)
    gpu = TorchBackend(config, device="cuda", precision=precision)
    assert gpu.info.precision == precision and gpu.info.device.startswith("cuda")
    images = np.random.default_rng(0).standard_normal((4, 3, 224, 224)).astype(np.float32)
    tokens = open_clip.tokenize(TEXTS).numpy()
    for encode in ("encode_images", "encode_texts"):
        batch = images if encode == "encode_images" else tokens
        ours, reference = getattr(gpu, encode)(batch), getattr(cpu, encode)(batch)
        assert ours.dtype == np.float32
        assert float((ours * reference).sum(axis=1).min()) >= min_cosine
        np.testing.assert_array_equal(getattr(gpu, encode)(batch), ours)  # deterministic on the GPU too
    gpu.warmup([1, 8])
    gpu.close()
    cpu.close()
