"""OnnxBackend on the tiny exported model: parity with torch, dynamic text length, providers, options, errors."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.clip.model_config import read_config
from service.clip.preprocess import ImagePreprocessor, PreprocessConfig
from service.clip.tokenizer import Tokenizer
from service.config import Settings
from service.errors import ClipServeError, InvalidInput, NotFound, StartupError
from service.protocol.errors import ErrorKind
from service.runtime.factory import create_backend
from service.runtime.onnx_backend import (
    CPU,
    CUDA,
    TENSORRT,
    OnnxBackend,
    SessionConfig,
    choose_providers,
    model_files,
)
from service.runtime.torch_backend import TorchBackend
from tests.shared_data import require_photos

TEXTS = [
    "a photo of a dog",
    "x",
    "a long description of a busy street at night, with neon signs, taxis, rain on the pavement and people " * 4,
    "",
]


@pytest.fixture(scope="module")
def onnx_backend(tiny_repo: Path) -> OnnxBackend:
    return OnnxBackend(read_config(tiny_repo / "tiny-onnx"))


@pytest.fixture(scope="module")
def torch_backend(tiny_repo: Path) -> TorchBackend:
    return TorchBackend(read_config(tiny_repo / "tiny"), threads=2)


@pytest.fixture(scope="module")
def pixels(onnx_backend: OnnxBackend) -> np.ndarray:
    preprocessor = ImagePreprocessor(PreprocessConfig.from_model_config(onnx_backend.config), max_pixels=10**8)
    return np.stack([preprocessor(p.read_bytes()) for p in require_photos()[:5]])


@pytest.fixture(scope="module")
def tokens() -> np.ndarray:
    return Tokenizer(77)(TEXTS)


def assert_close(got: np.ndarray, expected: np.ndarray) -> None:
    assert got.shape == expected.shape and got.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert float((got * expected).sum(axis=1).min()) >= 0.99999
    assert float(np.abs(got - expected).max()) <= 1e-4


def test_images_match_torch(onnx_backend: OnnxBackend, torch_backend: TorchBackend, pixels: np.ndarray) -> None:
    assert_close(onnx_backend.encode_images(pixels), torch_backend.encode_images(pixels))


def test_texts_match_torch(onnx_backend: OnnxBackend, torch_backend: TorchBackend, tokens: np.ndarray) -> None:
    assert_close(onnx_backend.encode_texts(tokens), torch_backend.encode_texts(tokens))


def test_text_length_and_batch_do_not_change_a_row(onnx_backend: OnnxBackend, tokens: np.ndarray) -> None:
    """The dynamic sequence axis is exact: padding to 77 or trimming, batched or alone, gives the same row."""
    batched = onnx_backend.encode_texts(tokens)
    first = tokens[:1]
    alone = onnx_backend.encode_texts(first[:, : int(np.count_nonzero(first))])
    np.testing.assert_allclose(alone[0], batched[0], atol=1e-6)
    trimmed = onnx_backend.encode_texts(tokens[:, : int((tokens != 0).sum(axis=1).max())])
    np.testing.assert_allclose(trimmed, batched, atol=1e-6)


def test_info(onnx_backend: OnnxBackend, tiny_repo: Path) -> None:
    info = onnx_backend.info
    config = read_config(tiny_repo / "tiny-onnx")
    assert (info.backend, info.precision, info.device, info.providers) == ("onnx", "fp32", "cpu", (CPU,))
    assert (info.dimension, info.image_size, info.logit_scale) == (32, 64, config.logit_scale)
    assert info.extra["io_binding"] == "off" and info.extra["graph_optimization"] == "all"
    assert len(info.fingerprint) == 16 and OnnxBackend(config).info.fingerprint == info.fingerprint


def test_io_binding_path_gives_the_same_rows(onnx_backend: OnnxBackend, pixels: np.ndarray,
                                             tokens: np.ndarray) -> None:
    """The IO-binding path (the CUDA provider's) run here on the CPU."""
    bound = OnnxBackend(onnx_backend.config, SessionConfig(io_binding=True))
    assert bound.info.extra["io_binding"] == "on"
    np.testing.assert_array_equal(bound.encode_images(pixels), onnx_backend.encode_images(pixels))
    np.testing.assert_array_equal(bound.encode_texts(tokens), onnx_backend.encode_texts(tokens))


def test_session_options_from_settings(tiny_repo: Path, pixels: np.ndarray, onnx_backend: OnnxBackend) -> None:
    settings = Settings(model_dir=tiny_repo, backend="onnx", inference_threads=1, onnx_graph_optimization="disable",
                        onnx_memory_arena=False, max_batch_size=8)
    backend = create_backend(read_config(tiny_repo / "tiny-onnx"), settings)
    assert isinstance(backend, OnnxBackend)
    assert (backend.options.threads, backend.options.graph_optimization, backend.options.memory_arena,
            backend.options.max_batch_size) == (1, "disable", False, 8)
    np.testing.assert_allclose(backend.encode_images(pixels), onnx_backend.encode_images(pixels), atol=1e-5)


def test_unavailable_providers_fall_back_to_cpu_and_are_reported(
    onnx_backend: OnnxBackend, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        backend = OnnxBackend(onnx_backend.config, SessionConfig(providers=(TENSORRT, CUDA), device="cuda:1"))
    assert backend.info.providers == (CPU,) and backend.info.device == "cpu"
    assert backend.info.extra["providers_unavailable"] == f"{TENSORRT},{CUDA}"
    assert backend.info.extra["providers_requested"] == f"{TENSORRT},{CUDA}"
    assert f"provider {TENSORRT} is not available" in caplog.text


@pytest.mark.parametrize(
    ("requested", "device", "available", "chosen", "missing"),
    [
        ((), "cpu", [TENSORRT, CUDA, CPU], [CPU], []),
        ((), "cuda", [TENSORRT, CUDA, CPU], [CUDA, CPU], []),
        ((), "cuda:1", [CPU], [CPU], [CUDA]),
        ((TENSORRT, CUDA, CPU), "cuda", [TENSORRT, CUDA, CPU], [TENSORRT, CUDA, CPU], []),
        ((TENSORRT, CUDA), "cuda", [CUDA, CPU], [CUDA, CPU], [TENSORRT]),
    ],
)
def test_choose_providers(requested: tuple[str, ...], device: str, available: list[str], chosen: list[str],
                          missing: list[str]) -> None:
    assert choose_providers(requested, device, available) == (chosen, missing)


def test_bad_batches_are_invalid_input(onnx_backend: OnnxBackend) -> None:
    with pytest.raises(InvalidInput, match=r"\(N, 3, 64, 64\)"):
        onnx_backend.encode_images(np.zeros((1, 3, 32, 32), np.float32))
    with pytest.raises(InvalidInput, match="1 <= L <= 77"):
        onnx_backend.encode_texts(np.ones((1, 78), np.int64))
    assert onnx_backend.encode_images(np.zeros((0, 3, 64, 64), np.float32)).shape == (0, 32)
    assert onnx_backend.encode_texts(np.zeros((0, 5), np.int64)).shape == (0, 32)


class SessionSpy:
    """An onnxruntime session that records the shape of every input it is run on."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.shapes: list[tuple[int, ...]] = []

    def run(self, output_names: Any, feeds: dict[str, np.ndarray]) -> Any:
        self.shapes += [tuple(v.shape) for v in feeds.values()]
        return self.session.run(output_names, feeds)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.session, name)


def test_warmup_runs(onnx_backend: OnnxBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both sessions run once per batch size given, texts at the full context length (the worst case)."""
    spies = {name: SessionSpy(session) for name, session in onnx_backend._sessions.items()}
    for name, spy in spies.items():
        monkeypatch.setitem(onnx_backend._sessions, name, spy)
    onnx_backend.warmup([1, 3])
    assert spies["pixels"].shapes == [(1, 3, 64, 64), (3, 3, 64, 64)]
    assert spies["tokens"].shapes == [(1, 77), (3, 77)]


def test_onnx_backend_without_export_names_the_export_command(tiny_repo: Path) -> None:
    """``--backend onnx`` on a model with no ONNX files: a clear error naming the command that makes them."""
    with pytest.raises(NotFound, match=r"no ONNX export .* run `clipserve export --model tiny`"):
        create_backend(read_config(tiny_repo / "tiny"), Settings(model_dir=tiny_repo, backend="onnx"))


def test_a_session_that_cannot_start_is_a_startup_error_naming_onnx_providers(tiny_repo: Path,
                                                                              tmp_path: Path) -> None:
    """onnxruntime refusing a graph at start-up is the operator's problem (INTERNAL), not a client's (INVALID)."""
    folder = tmp_path / "damaged"
    shutil.copytree(tiny_repo / "tiny-onnx", folder)
    config = read_config(folder)
    model_files(config)[2].write_bytes(b"not an onnx graph")  # the text tower
    with pytest.raises(StartupError) as raised:
        create_backend(config, Settings(model_dir=tmp_path, backend="onnx", onnx_providers=CPU))
    error = raised.value
    assert not isinstance(error, InvalidInput) and isinstance(error, ClipServeError)
    assert error.kind == ErrorKind.INTERNAL and error.setting == "onnx_providers"
    assert "text.onnx" in error.message and "INVALID_PROTOBUF" in error.message
    assert f"--onnx-providers / CLIPSERVE_ONNX_PROVIDERS, now {CPU}" in error.message
    assert "\n" not in error.message and len(error.message) < 800  # one short line, for a terminal
