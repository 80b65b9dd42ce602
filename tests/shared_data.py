"""Where ../shared lives, and helpers that skip with a clear message where it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CLIPSERVE_SHARED", REPO.parent / "shared"))
PHOTOS = SHARED / "datasets" / "photos"
CIFAR10 = SHARED / "datasets" / "cifar10"


def require_photos() -> list[Path]:
    """The shared real photos, or skip with a clear message."""
    if not PHOTOS.is_dir():
        pytest.skip(f"shared photos not found at {PHOTOS} (set CLIPSERVE_SHARED)")
    return sorted(PHOTOS.glob("*.JPEG"))


def require_cifar10() -> Path:
    """The shared CIFAR-10 tar folder, or skip with a clear message."""
    if not (CIFAR10 / "test.tar").is_file():
        pytest.skip(f"shared CIFAR-10 not found at {CIFAR10} (set CLIPSERVE_SHARED)")
    return CIFAR10
