"""The fake backend's determinism and hooks; backend selection; serving the fake without torch."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest

from service.clip.model_config import ModelConfig
from service.engine.served_model import start_backend_threads
from service.runtime.base import Backend
from service.runtime.factory import backend_loaders, backend_name, worker_device
from service.runtime.fake import FakeBackend
from tests.api.helpers import make_settings, write_model

REPO = Path(__file__).resolve().parents[2]


def fake(**fields: object) -> FakeBackend:
    return FakeBackend.from_config(ModelConfig(name="f", architecture="fake", backend="fake", **fields))  # type: ignore[arg-type]


def test_same_input_same_row_whatever_the_batch_and_padding() -> None:
    backend = fake(embed_dim=24)
    assert isinstance(backend, Backend)
    tokens = np.array([[49406, 320, 49407, 0, 0], [49406, 1929, 539, 320, 49407]])
    rows = backend.encode_texts(tokens)
    alone = backend.encode_texts(np.array([[49406, 320, 49407]]))
    assert rows.shape == (2, 24) and rows.dtype == np.float32
    np.testing.assert_array_equal(rows[0], alone[0])
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1, rtol=1e-6)
    pixels = np.random.default_rng(0).standard_normal((3, 3, 224, 224)).astype(np.float32)
    images = backend.encode_images(pixels)
    np.testing.assert_array_equal(images[1], backend.encode_images(pixels[1:2])[0])
    assert not np.array_equal(images[0], images[1])


def test_options_from_weights() -> None:
    backend = fake(weights="delay_ms=5,fail_token=320", logit_scale=10.0)
    assert backend.delay_s == pytest.approx(0.005) and backend.info.logit_scale == 10.0
    assert backend.info.dimension == 64 and backend.info.backend == "fake"
    with pytest.raises(RuntimeError, match="marker"):
        backend.encode_texts(np.array([[49406, 320, 49407]]))
    backend.encode_texts(np.array([[49406, 321, 49407]]))
    backend.warmup([1, 2])
    backend.close()
    assert backend.closed


def test_backend_choice_and_workers(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, backend="onnx", workers_per_model=3)
    torch_model = ModelConfig(name="t", architecture="ViT-B-32")
    fake_model = ModelConfig(name="f", architecture="fake", backend="fake")
    assert backend_name(torch_model, settings) == "onnx"
    assert backend_name(torch_model, make_settings(tmp_path)) == "onnx"  # auto: ONNX Runtime by default
    assert backend_name(torch_model, make_settings(tmp_path, backend="torch")) == "torch"
    assert backend_name(torch_model.model_copy(update={"backend": "torch"}), make_settings(tmp_path)) == "torch"
    assert backend_name(fake_model, settings) == "fake"
    assert [worker_device("cuda", i, 2) for i in range(2)] == ["cuda:0", "cuda:1"]
    assert worker_device("cuda:1", 0, 2) == "cuda:1" and worker_device("cpu", 1, 3) == "cpu"
    backends = [load() for load in backend_loaders(fake_model, settings)]
    assert len(backends) == 3 and all(isinstance(b, FakeBackend) for b in backends)


def test_serving_the_fake_model_never_imports_torch(tmp_path: Path) -> None:
    write_model(tmp_path, "fake")
    script = textwrap.dedent(f"""
        import asyncio, sys
        sys.modules["torch"] = None  # any import of torch now fails
        from service.cli import main
        from service.engine import Engine, TextItem
        from service.metrics import Metrics
        from service.config import Settings

        async def go():
            engine = Engine(Settings(model="fake", model_dir={str(tmp_path)!r}, grpc_port=0), Metrics())
            await engine.start()
            print((await engine.embed([TextItem("hi")])).embeddings.shape)
            await engine.stop(0)

        asyncio.run(go())
        import service.rest.app, service.cli.serve
        print("torch" in sys.modules and sys.modules["torch"] is not None)
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["(1,", "32)", "False"]


def test_backends_started_before_a_failed_one_are_closed() -> None:
    started = fake(embed_dim=8)
    closed_on: list[str] = []
    started.close = lambda: closed_on.append(threading.current_thread().name)  # type: ignore[method-assign]

    def broken() -> Backend:
        raise RuntimeError("worker 1: out of GPU memory")

    with pytest.raises(RuntimeError, match="out of GPU memory"):
        start_backend_threads([lambda: started, broken], "clipserve-f")
    assert closed_on == ["clipserve-f-0_0"]  # closed, on its own backend thread
