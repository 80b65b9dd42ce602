"""Pytest hooks and fixtures shared by every test: the GPU marker's skip, one cache folder per session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from service.clip.model_config import ModelConfig

DEMO = "clipserve-demo"


def _has_cuda() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:
        return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip tests marked ``gpu`` where no CUDA device is present."""
    gpu_items = [item for item in items if item.get_closest_marker("gpu") is not None]
    if not gpu_items or _has_cuda():  # import torch only when a GPU test was collected
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU (CUDA not available)")
    for item in gpu_items:
        item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def clipserve_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """``CLIPSERVE_CACHE_DIR`` for the whole session: one temporary folder, shared with the servers it starts.

    The demo model is served on ONNX Runtime from an export made on demand into this cache, so the
    session exports it at most once (about 20 s) and never writes to ``~/.cache``.
    """
    folder = tmp_path_factory.mktemp("clipserve-cache")
    patch = pytest.MonkeyPatch()
    patch.setenv("CLIPSERVE_CACHE_DIR", str(folder))
    yield folder
    patch.undo()


@pytest.fixture(scope="session")
def demo_onnx(clipserve_cache: Path) -> ModelConfig:
    """The demo model's config with its ONNX files: the session's on-demand export (made on first use)."""
    from service.clip.model_config import resolve_model
    from service.config import REPO_MODELS_DIR, Settings
    from service.runtime.onnx_cache import ensure_onnx

    if not (REPO_MODELS_DIR / DEMO / "config.json").is_file():
        pytest.skip(f"the demo model is not in {REPO_MODELS_DIR / DEMO}")
    settings = Settings(model_dir=REPO_MODELS_DIR, cache_dir=clipserve_cache, backend="onnx")
    return ensure_onnx(resolve_model(DEMO, REPO_MODELS_DIR), settings)
