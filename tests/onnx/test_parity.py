"""ORT fp32 against torch on real architectures: ViT-B-32 and RN50 (seeded random weights), the demo model.

Each model is exported once for this module (into a temporary repository), then both backends embed
real photos and texts of mixed lengths (so the text graph's dynamic sequence axis is exercised).
Criterion: cosine >= 0.99999 and max abs difference <= 1e-4 per row.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from service.clip.model_config import ModelConfig, read_config, resolve_model
from service.clip.preprocess import ImagePreprocessor, PreprocessConfig
from service.clip.tokenizer import Tokenizer
from service.config import REPO_MODELS_DIR
from service.export import ExportOptions, export_model
from service.runtime.onnx_backend import OnnxBackend
from service.runtime.torch_backend import TorchBackend
from tests.shared_data import require_photos

DEMO = "clipserve-demo"
TEXTS = [
    "a photo of a dog",
    "tench",
    "a close-up photograph of a small bird with bright yellow feathers sitting on a branch",
    "an old red fire truck parked in front of the station, with its ladder raised, on a cloudy "
    "afternoon in a small town, while children watch from across the street and a dog barks",
    "🙂 ünïcödé & <html> text",
    "",
]


def _demo() -> ModelConfig:
    if not (REPO_MODELS_DIR / DEMO / "config.json").is_file():
        pytest.skip(f"the demo model is not in {REPO_MODELS_DIR / DEMO} yet")
    return resolve_model(DEMO, REPO_MODELS_DIR)


@pytest.fixture(
    scope="module",
    params=[
        pytest.param("ViT-B-32", marks=pytest.mark.slow),
        pytest.param("RN50", marks=pytest.mark.slow),
        DEMO,
    ],
)
def backends(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[tuple[OnnxBackend, TorchBackend]]:
    """The model exported once to fp32 ONNX, and the same model on the torch backend.

    The demo model's export is the session's on-demand one (``demo_onnx``), as the server makes it.
    """
    name: str = request.param
    if name == DEMO:
        config, exported = _demo(), request.getfixturevalue("demo_onnx")
    else:
        config = resolve_model(name, Path("/nonexistent"))
        out = tmp_path_factory.mktemp(f"parity-{name}") / name
        export_model(config, out, name, ExportOptions())
        exported = read_config(out)
    pair = OnnxBackend(exported), TorchBackend(config, threads=2)
    yield pair
    for backend in pair:
        backend.close()


def _check(got: np.ndarray, want: np.ndarray) -> None:
    cosine = (got * want).sum(axis=1)
    assert float(cosine.min()) >= 0.99999, cosine
    assert float(np.abs(got - want).max()) <= 1e-4


def test_images(backends: tuple[OnnxBackend, TorchBackend]) -> None:
    onnx_backend, torch_backend = backends
    preprocessor = ImagePreprocessor(PreprocessConfig.from_model_config(onnx_backend.config), max_pixels=10**8)
    pixels = np.stack([preprocessor(p.read_bytes()) for p in require_photos()[::25]])  # 5 varied photos
    _check(onnx_backend.encode_images(pixels), torch_backend.encode_images(pixels))
    _check(onnx_backend.encode_images(pixels[:1]), torch_backend.encode_images(pixels[:1]))


def test_texts(backends: tuple[OnnxBackend, TorchBackend]) -> None:
    onnx_backend, torch_backend = backends
    tokens = Tokenizer(onnx_backend.info.context_length)(TEXTS)
    _check(onnx_backend.encode_texts(tokens), torch_backend.encode_texts(tokens))
    short = tokens[:2, :6]  # a batch whose longest text needs 6 positions
    _check(onnx_backend.encode_texts(short), torch_backend.encode_texts(short))
