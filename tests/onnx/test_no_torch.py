"""ONNX serving in processes where ``import torch`` (and open_clip, torchvision) fails.

A ``sitecustomize`` on PYTHONPATH installs a ``sys.meta_path`` finder that raises ImportError for
those packages. In such a process the backend alone, and then the real server (``python -m service
serve --backend onnx``), embed real photos and texts; the rows equal the torch backend's.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from service.clip.model_config import read_config
from service.clip.preprocess import ImagePreprocessor, PreprocessConfig
from service.clip.tokenizer import Tokenizer
from service.measure.serving import free_port
from service.runtime.torch_backend import TorchBackend
from tests.api.server_process import ServerProcess
from tests.shared_data import REPO, require_photos

BLOCKER = textwrap.dedent(
    """
    import sys

    class BlockTorch:
        blocked = ("torch", "torchvision", "open_clip")

        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in self.blocked:
                raise ImportError(f"{name} is blocked in this test: ONNX serving must not import it")
            return None

    sys.meta_path.insert(0, BlockTorch())
    """
)
TEXTS = ["a photo of a cat", "two dogs playing in the snow on a sunny winter afternoon", "a"]
STARTUP_S = 120.0


@pytest.fixture(scope="module")
def blocked_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment of a process in which torch, torchvision and open_clip cannot be imported."""
    folder = tmp_path_factory.mktemp("block-torch")
    (folder / "sitecustomize.py").write_text(BLOCKER)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLIPSERVE_")}
    env["PYTHONPATH"] = os.pathsep.join([str(folder), str(REPO)])
    return env


@pytest.fixture(scope="module")
def expected(tiny_repo: Path) -> tuple[np.ndarray, np.ndarray]:
    """Image rows of 3 photos and text rows of TEXTS from the torch backend on the unexported model."""
    backend = TorchBackend(read_config(tiny_repo / "tiny"), threads=2)
    preprocessor = ImagePreprocessor(PreprocessConfig.from_model_config(backend.config), max_pixels=10**8)
    pixels = np.stack([preprocessor(p.read_bytes()) for p in require_photos()[:3]])
    return backend.encode_images(pixels), backend.encode_texts(Tokenizer(77)(TEXTS))


def test_blocker_blocks(blocked_env: dict[str, str]) -> None:
    done = subprocess.run([sys.executable, "-c", "import torch"], env=blocked_env, capture_output=True, text=True)
    assert done.returncode != 0 and "torch is blocked in this test" in done.stderr


def test_backend_without_torch(blocked_env: dict[str, str], tiny_repo: Path, tmp_path: Path,
                               expected: tuple[np.ndarray, np.ndarray]) -> None:
    script = textwrap.dedent(
        f"""
        import sys, numpy as np
        from pathlib import Path
        from service.clip.model_config import read_config
        from service.clip.preprocess import ImagePreprocessor, PreprocessConfig
        from service.clip.tokenizer import Tokenizer
        from service.runtime.onnx_backend import OnnxBackend
        config = read_config(Path({str(tiny_repo / "tiny-onnx")!r}))
        backend = OnnxBackend(config)
        pre = ImagePreprocessor(PreprocessConfig.from_model_config(config), max_pixels=10**8)
        pixels = np.stack([pre(Path(p).read_bytes()) for p in {[str(p) for p in require_photos()[:3]]!r}])
        np.save({str(tmp_path / "images.npy")!r}, backend.encode_images(pixels))
        np.save({str(tmp_path / "texts.npy")!r}, backend.encode_texts(Tokenizer(77)({TEXTS!r})))
        assert not any(m.split(".")[0] in ("torch", "open_clip") for m in sys.modules), "torch got imported"
        """
    )
    done = subprocess.run([sys.executable, "-c", script], env=blocked_env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    for name, rows in zip(("images", "texts"), expected, strict=True):
        got = np.load(tmp_path / f"{name}.npy")
        assert float((got * rows).sum(axis=1).min()) >= 0.99999 and float(np.abs(got - rows).max()) <= 1e-4


@pytest.fixture(scope="module")
def server(blocked_env: dict[str, str], tiny_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``python -m service serve --backend onnx`` on the exported tiny model, without torch."""
    log = tmp_path_factory.mktemp("server-log") / "server.log"
    process = ServerProcess(log, "--backend", "onnx", "--model", "tiny-onnx", "--model-dir", str(tiny_repo),
                            env=blocked_env)
    try:
        process.wait_ready(STARTUP_S)
        yield process.url
    finally:
        process.stop()


def test_server_without_torch_serves_torch_equal_embeddings(server: str, expected: tuple[np.ndarray, np.ndarray]
                                                            ) -> None:
    images = [{"image": base64.b64encode(p.read_bytes()).decode()} for p in require_photos()[:3]]
    body = {"inputs": [*images, *({"text": t} for t in TEXTS)]}
    response = httpx.post(f"{server}/embed", json=body, timeout=60)
    assert response.status_code == 200, response.text
    rows = np.array([d["embedding"] for d in response.json()["data"]], dtype=np.float32)
    want = np.concatenate(expected)
    assert float((rows * want).sum(axis=1).min()) >= 0.99999 and float(np.abs(rows - want).max()) <= 1e-4
    info = httpx.get(f"{server}/models", timeout=10).json()["data"][0]
    assert (info["backend"], info["providers"]) == ("onnx", ["CPUExecutionProvider"])


def test_server_onnx_without_export_fails_naming_the_export_command(blocked_env: dict[str, str],
                                                                    tiny_repo: Path) -> None:
    command = [sys.executable, "-m", "service", "serve", "--backend", "onnx", "--model", "tiny",
               "--model-dir", str(tiny_repo), "--port", str(free_port()), "--grpc-port", "0"]
    done = subprocess.run(command, env=blocked_env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "run `clipserve export --model tiny` first" in done.stdout + done.stderr
    assert json.dumps("torch is blocked")[1:-1] not in done.stderr  # failed on the missing files, not on torch
