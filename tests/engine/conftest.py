"""Fixtures: a started Engine on fake models from a temporary model repository."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from service.engine import Engine
from service.metrics import Metrics
from tests.api.helpers import make_settings, write_model


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """Models ``fake`` (32-d, default), ``other`` (16-d) and ``slow`` (each batch takes 300 ms)."""
    folder = tmp_path / "models"
    write_model(folder, "fake")
    write_model(folder, "other", embed_dim=16)
    write_model(folder, "slow", weights="delay_ms=300")
    return folder


@pytest.fixture
async def engine(model_dir: Path) -> AsyncIterator[Engine]:
    """A started engine serving ``fake`` and ``other``."""
    eng = Engine(make_settings(model_dir, model="fake,other", max_labels=50), Metrics())
    await eng.start()
    yield eng
    await eng.stop(1.0)
