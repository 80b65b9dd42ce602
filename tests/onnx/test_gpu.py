"""OnnxBackend on the CUDA provider (needs an NVIDIA GPU and onnxruntime-gpu; skipped elsewhere).

The fuller GPU check (TensorRT too, ViT-B-32 and the demo model, throughput) is scripts/gpu_check.sh.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from service.clip.model_config import read_config
from service.clip.tokenizer import Tokenizer
from service.export import ExportOptions, derive
from service.runtime.onnx_backend import CPU, CUDA, OnnxBackend, SessionConfig

pytestmark = pytest.mark.gpu
TEXTS = ["a photo of a dog", "a long caption about a harbour at dawn with fishing boats and gulls", "x"]


@pytest.fixture(scope="module")
def cpu_rows(tiny_repo: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if CUDA not in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu is not installed (pip install '.[gpu]' in place of onnxruntime)")
    backend = OnnxBackend(read_config(tiny_repo / "tiny-onnx"))
    pixels = np.random.default_rng(0).standard_normal((4, 3, 64, 64)).astype(np.float32)
    tokens = Tokenizer(77)(TEXTS)
    return pixels, tokens, np.concatenate([backend.encode_images(pixels), backend.encode_texts(tokens)])


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_cuda_provider_matches_cpu(precision: str, tiny_repo: Path, tmp_path: Path,
                                   cpu_rows: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    folder = tiny_repo / "tiny-onnx"
    if precision == "fp16":
        folder = tmp_path / "tiny-fp16"
        derive(tiny_repo / "tiny-onnx", folder, folder.name, ExportOptions(precision="fp16"))
    backend = OnnxBackend(read_config(folder), SessionConfig(providers=(CUDA, CPU), device="cuda:0"))
    assert backend.info.providers[0] == CUDA, backend.info.extra
    assert backend.info.extra["io_binding"] == "on" and backend.info.device == "cuda:0"
    pixels, tokens, want = cpu_rows
    got = np.concatenate([backend.encode_images(pixels), backend.encode_texts(tokens)])
    cosine = float((got * want).sum(axis=1).min())
    assert cosine >= (0.99999 if precision == "fp32" else 0.999)
