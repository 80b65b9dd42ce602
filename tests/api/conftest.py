"""Fixtures: a temporary model repository with fake models, and an in-process server on it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.api.browser import browser, trap  # noqa: F401 (fixtures of the browser tests)
from tests.api.helpers import make_settings, serve, write_model


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """Models ``fake`` (32-d, the default) and ``fake-b`` (16-d)."""
    folder = tmp_path / "models"
    write_model(folder, "fake")
    write_model(folder, "fake-b", embed_dim=16, logit_scale=50.0)
    return folder


@pytest.fixture
async def client(model_dir: Path) -> AsyncIterator[httpx.AsyncClient]:
    """A client of a server on both fake models, default settings otherwise."""
    async with serve(make_settings(model_dir, model="fake,fake-b")) as c:
        yield c
