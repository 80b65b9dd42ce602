"""``clipserve export`` on the tiny model: in place and under a new name, fp32 and fp16; an int8 variant."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from service.cli import main
from service.clip.model_config import read_config
from service.clip.preprocess import ImagePreprocessor, PreprocessConfig
from service.clip.tokenizer import Tokenizer
from service.export import ExportOptions, derive
from service.runtime.onnx_backend import OnnxBackend
from tests.onnx.conftest import write_tiny
from tests.shared_data import require_photos

TEXTS = ["a photo of a bird", "a red car parked next to a tall building", "snow"]


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory, tiny_repo: Path) -> Path:
    """A repository with ``entry`` (torch only) and a copy of the fp32 export as ``reference``."""
    folder = tmp_path_factory.mktemp("export-repo")
    write_tiny(folder, "entry")
    shutil.copytree(tiny_repo / "tiny-onnx", folder / "reference")
    return folder


@pytest.fixture(scope="module")
def inputs(repo: Path) -> tuple[np.ndarray, np.ndarray]:
    config = read_config(repo / "reference")
    preprocessor = ImagePreprocessor(PreprocessConfig.from_model_config(config), max_pixels=10**8)
    pixels = np.stack([preprocessor(p.read_bytes()) for p in require_photos()[:4]])
    return pixels, Tokenizer(77)(TEXTS)


def embed(folder: Path, inputs: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    backend = OnnxBackend(read_config(folder))
    return np.concatenate([backend.encode_images(inputs[0]), backend.encode_texts(inputs[1])])


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float((a * b).sum(axis=1).min())


def test_export_in_place_serves_the_entry(repo: Path, inputs: tuple[np.ndarray, np.ndarray],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", "--model", "entry", "--model-dir", str(repo)]) == 0
    assert "clipserve serve --model entry" in capsys.readouterr().out
    config = read_config(repo / "entry")
    assert (config.backend, config.arch_config, config.embed_dim, config.image_size) == ("onnx", "arch.json", 32, 64)
    assert config.onnx is not None and config.onnx.precision == "fp32"
    assert config.logit_scale == read_config(repo / "reference").logit_scale
    for path in (config.resolve(config.onnx.image), config.resolve(config.onnx.text)):
        onnx.checker.check_model(str(path))
        assert not list(path.parent.glob("*.data")), "weights should be inline (< 2 GB)"
    np.testing.assert_allclose(embed(repo / "entry", inputs), embed(repo / "reference", inputs), atol=1e-6)


def test_export_fp16_keeps_float32_io(repo: Path, inputs: tuple[np.ndarray, np.ndarray]) -> None:
    assert main(["export", "--model", "entry", "--model-dir", str(repo), "--name", "half",
                 "--precision", "fp16"]) == 0
    config = read_config(repo / "half")
    assert (repo / "half" / "arch.json").is_file() and config.onnx is not None and config.onnx.precision == "fp16"
    graph = onnx.load(str(config.resolve(config.onnx.image))).graph
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in graph.initializer)
    backend = OnnxBackend(config)  # on the CPU here; fp16 is meant for GPUs
    assert backend.info.precision == "fp16"
    assert min_cosine(embed(repo / "half", inputs), embed(repo / "reference", inputs)) >= 0.999


def test_int8_optimised_variant_of_an_export(repo: Path, inputs: tuple[np.ndarray, np.ndarray]) -> None:
    """``derive``: the fp32 export quantised (what ``--precision int8 --optimize`` does after exporting)."""
    config = derive(repo / "reference", repo / "int8", "int8", ExportOptions(precision="int8", optimize=True))
    assert config.onnx is not None and config.onnx.precision == "int8"
    assert read_config(repo / "int8").model_dump(exclude={"name", "onnx", "path"}) == read_config(
        repo / "reference").model_dump(exclude={"name", "onnx", "path"})
    image = onnx.load(str(config.resolve(config.onnx.image))).graph
    assert any(n.op_type in ("MatMulInteger", "DynamicQuantizeMatMul") for n in image.node)
    assert OnnxBackend(read_config(repo / "int8")).info.precision == "int8"
    # a drop, not parity: quantisation changes the numbers; the accuracy change is measured on the demo model
    assert min_cosine(embed(repo / "int8", inputs), embed(repo / "reference", inputs)) >= 0.95


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--opset", "13"], "--opset must be 17 or later"),
        (["--precision", "fp16", "--optimize"], "fp16 is for GPUs"),
        (["--model", "no-such-arch"], "no-such-arch: not a model repository entry"),
    ],
)
def test_export_refuses_bad_arguments(repo: Path, argv: list[str], message: str,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    model = [] if "--model" in argv else ["--model", "entry"]
    assert main(["export", *model, "--model-dir", str(repo), *argv]) == 2
    assert message in capsys.readouterr().err
