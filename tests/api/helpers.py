"""Test helpers for the serving core: a fake-model repository, an in-process server, test images."""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

from service.config import Settings
from service.rest.app import create_app

FAKE_DIM = 32
FAKE_SIZE = 32


def write_model(model_dir: Path, name: str, **fields: Any) -> Path:
    """A model repository entry served by the fake backend (``fields`` override the config)."""
    config = {"name": name, "architecture": "fake", "backend": "fake", "embed_dim": FAKE_DIM,
              "image_size": FAKE_SIZE, **fields}
    folder = model_dir / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def make_settings(model_dir: Path, **overrides: Any) -> Settings:
    """Small, fast settings for in-process tests (gRPC off)."""
    values: dict[str, Any] = {
        "model": "fake", "model_dir": model_dir, "grpc_port": 0, "max_batch_size": 8, "max_delay_ms": 2.0,
        "preprocess_threads": 2, "request_timeout_s": 20.0, **overrides,
    }
    return Settings(**values)


@asynccontextmanager
async def serve(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan running, and an httpx client talking to it in-process."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://clipserve", timeout=30) as client:
            yield client


def encode(image: Image.Image, fmt: str = "PNG", **params: Any) -> bytes:
    """An image's bytes in ``fmt``."""
    out = io.BytesIO()
    image.save(out, fmt, **params)
    return out.getvalue()


def b64(data: bytes) -> str:
    """Base64 text of bytes."""
    return base64.b64encode(data).decode()


def photo(seed: int, size: tuple[int, int] = (48, 40), fmt: str = "PNG") -> bytes:
    """A random RGB image (distinct per seed)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return encode(Image.fromarray(pixels), fmt)


def truncated_jpeg() -> bytes:
    """A JPEG cut in the middle of its scan data."""
    data = photo(1, (256, 256), "JPEG")
    return data[: len(data) // 2]


def png_bomb(width: int = 10_000, height: int = 10_000) -> bytes:
    """A 1-bit PNG of ``width`` x ``height`` (100 megapixels by default) that compresses to a few kB."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    row = b"\x00" * (1 + (width + 7) // 8)
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    idat = zlib.compress(row * height, 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def animated_gif() -> bytes:
    """A three-frame animated GIF."""
    frames = [Image.new("P", (24, 24), color) for color in (10, 80, 200)]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)


def png16() -> bytes:
    """A 16-bit greyscale PNG."""
    values = np.linspace(0, 65535, 40 * 30, dtype=np.uint16).reshape(30, 40)
    return encode(Image.fromarray(values), "PNG")


def one_pixel() -> bytes:
    """A 1x1 PNG."""
    return encode(Image.new("RGB", (1, 1), (0, 128, 255)))


def floats(embedding: list[float] | str) -> np.ndarray:
    """An embedding from a response (float list or base64 little-endian float32) as float32."""
    if isinstance(embedding, str):
        return np.frombuffer(base64.b64decode(embedding), dtype="<f4")
    return np.asarray(embedding, dtype=np.float32)
