"""ONNX Runtime by default, on MobileCLIP2-S0 from a checkpoint file (seeded random weights, open_clip's).

``--model MobileCLIP2-S0:/path/to/ckpt`` and no other backend setting: the first start exports it (once)
and serves it on ONNX Runtime; the second start reuses the cached export without reading the checkpoint
(an audit hook records every ``open`` of it); ``--backend torch`` forces torch. Both runtimes serve the
re-parameterised model (timm folds FastViT's branches at load), and both match the un-re-parameterised
open_clip reference within cosine 0.99999. The module exports MobileCLIP2-S0 once (~40 s on 2 cores).
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import pytest
import torch

from service.clip.model_config import read_config
from service.clip.preprocess import ImagePreprocessor, PreprocessConfig
from tests.api.helpers import b64, floats, make_settings, photo, serve

pytestmark = pytest.mark.slow

ARCH = "MobileCLIP2-S0"
SEED = 5
MIN_COSINE = 0.99999
MAX_ABS = 1e-4
TEXTS = ["a photo of a dog", "", "a diagram", "two cats on a sofa, sleeping in the afternoon sun " * 3]
IMAGES = [photo(seed, (300, 260), "JPEG") for seed in range(3)] + [photo(9, (64, 90))]

_watch: dict[str, list[str]] = {}  # real path of a watched file -> the audit events that opened it


def _audit(event: str, args: tuple[Any, ...]) -> None:
    """Record ``open`` of a watched file (builtin open, io.open and os.open raise this event)."""
    if event != "open" or not _watch or not isinstance(args[0], (str, bytes, os.PathLike)):
        return
    path = os.path.realpath(os.fsdecode(args[0]))
    if path in _watch:
        _watch[path].append(f"{event} {args[1]!r}")


sys.addaudithook(_audit)  # hooks cannot be removed: it records only while a test watches a file


@pytest.fixture
def opened() -> Iterator[dict[str, list[str]]]:
    """The files a test watches (``opened[real path] = []``) and what opened them meanwhile."""
    yield _watch
    _watch.clear()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """open_clip's MobileCLIP2-S0 with seeded random weights, saved as a torch state dict."""
    torch.manual_seed(SEED)
    model = open_clip.create_model(ARCH)
    path = tmp_path_factory.mktemp("mobileclip") / "mobileclip2-s0.pt"
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The cache folder the module's starts share (the first start exports into it)."""
    return tmp_path_factory.mktemp("cache")


def reference(checkpoint: Path, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """open_clip's own embeddings of ``pixels`` and ``TEXTS``, not re-parameterised."""
    model = open_clip.create_model(ARCH, pretrained=str(checkpoint)).eval()
    assert any(hasattr(m, "reparameterize") for m in model.modules())  # the train-time branches are there
    with torch.inference_mode():
        images = model.encode_image(torch.from_numpy(pixels), normalize=True).numpy()
        texts = model.encode_text(open_clip.get_tokenizer(ARCH)(TEXTS), normalize=True).numpy()
    return images, texts


async def served(settings: Any) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """GET /models' card, then the embeddings of ``IMAGES`` and ``TEXTS`` from a server started with ``settings``."""
    async with serve(settings) as client:
        (card,) = (await client.get("/models")).json()["data"]
        items = [{"image": b64(data)} for data in IMAGES] + [{"text": text} for text in TEXTS]
        response = await client.post("/embed", json={"inputs": items})
    assert response.status_code == 200, response.text
    rows = np.stack([floats(d["embedding"]) for d in response.json()["data"]])
    return card, rows[: len(IMAGES)], rows[len(IMAGES):]


def assert_close(ours: np.ndarray, expected: np.ndarray, what: str) -> None:
    cosine = (ours * expected).sum(axis=1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(expected, axis=1)
    worst = float(np.abs(ours - expected).max())
    assert cosine.min() >= MIN_COSINE and worst <= MAX_ABS, f"{what}: cosine {cosine.min():.7f}, max abs {worst:.2e}"


def settings_for(checkpoint: Path, cache: Path, tmp_path: Path, **overrides: Any) -> Any:
    """``--model MobileCLIP2-S0:<checkpoint> --cache-dir <cache>``: no backend setting unless overridden."""
    return make_settings(tmp_path, model=f"{ARCH}:{checkpoint}", cache_dir=cache, warmup=False, **overrides)


@pytest.fixture(scope="module")
def first_start(checkpoint: Path, cache: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, ...]:
    """The first start (it exports into ``cache``): /models' card, image and text embeddings."""
    return asyncio.run(served(settings_for(checkpoint, cache, tmp_path_factory.mktemp("models"))))


@pytest.fixture(scope="module")
def expected(checkpoint: Path, cache: Path, first_start: tuple[Any, ...]) -> tuple[np.ndarray, np.ndarray]:
    """The reference embeddings of ``IMAGES`` (preprocessed as the export's config says) and ``TEXTS``."""
    config = read_config(next((cache / "onnx").iterdir()))
    pre = ImagePreprocessor(PreprocessConfig.from_model_config(config), max_pixels=10**8)
    return reference(checkpoint, pre.stack([pre(data) for data in IMAGES]))


def test_first_start_exports_and_serves_on_onnx(cache: Path, first_start: tuple[Any, ...],
                                                expected: tuple[np.ndarray, np.ndarray]) -> None:
    card, images, texts = first_start
    folder = next((cache / "onnx").iterdir())
    assert card["backend"] == "onnx" and card["providers"] == ["CPUExecutionProvider"]
    assert card["backend_reason"] == f"exported on first start, cached in {folder}"
    assert [p.name for p in (cache / "onnx").iterdir()] == [folder.name]  # one export, no temporary left
    assert folder.name.startswith("MobileCLIP2-S0-mobileclip2-s0.pt-")
    want_images, want_texts = expected
    assert_close(images, want_images, "ONNX Runtime images")
    assert_close(texts, want_texts, "ONNX Runtime texts")


async def test_second_start_reuses_the_export_without_reading_the_checkpoint(
    checkpoint: Path, cache: Path, tmp_path: Path, opened: dict[str, list[str]], first_start: tuple[Any, ...]
) -> None:
    folder = next((cache / "onnx").iterdir())
    before = {p: p.stat().st_mtime_ns for p in folder.rglob("*")}
    opened[os.path.realpath(checkpoint)] = []
    with open(checkpoint, "rb"):  # the hook sees an open of the checkpoint
        pass
    assert len(opened[os.path.realpath(checkpoint)]) == 1
    opened[os.path.realpath(checkpoint)].clear()
    card, _, _ = await served(settings_for(checkpoint, cache, tmp_path))
    assert card["backend"] == "onnx" and card["backend_reason"] == f"the ONNX export cached in {folder}"
    assert opened[os.path.realpath(checkpoint)] == [], "the start opened the checkpoint"
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("*")} == before  # nothing exported again


async def test_backend_torch_forces_torch_on_the_reparameterised_model(
    checkpoint: Path, cache: Path, tmp_path: Path, expected: tuple[np.ndarray, np.ndarray]
) -> None:
    card, images, texts = await served(settings_for(checkpoint, cache, tmp_path, backend="torch"))
    assert card["backend"] == "torch" and card["backend_reason"] == "forced by --backend torch"
    assert card["extra"]["reparameterized"] == "yes"
    want_images, want_texts = expected
    assert_close(images, want_images, "torch images")
    assert_close(texts, want_texts, "torch texts")
