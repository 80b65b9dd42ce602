"""Real servers for the gRPC and client tests: the real Engine on the fake backend, on 127.0.0.1.

``write_model`` makes a temporary model repository entry (``"backend": "fake"``); ``grpc_server``
runs Engine + grpc.aio in the test's event loop; ``LiveServer`` runs the serving process's
``service.server.serve`` (REST and gRPC on one engine) in a thread of its own, for blocking clients.
"""

from __future__ import annotations

import asyncio
import io
import json
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

from service.config import Settings
from service.engine import Engine
from service.grpc.server import GrpcServer, start_grpc
from service.measure.serving import free_port
from service.metrics import Metrics
from service.server import Shutdown, serve

DIM = 32


def write_model(repo: Path, name: str, *, options: str = "", dim: int = DIM) -> Path:
    """A fake-backend model entry ``repo/name/config.json``; ``options`` go in ``weights`` (delay_ms=...)."""
    folder = repo / name
    folder.mkdir(parents=True, exist_ok=True)
    config: dict[str, Any] = {"name": name, "architecture": "fake", "backend": "fake", "embed_dim": dim,
                              "image_size": 32}
    if options:
        config["weights"] = options
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def make_settings(repo: Path, model: str = "fake", **overrides: Any) -> Settings:
    """Settings for a test server: the repository, no warm-up, loopback only."""
    values: dict[str, Any] = {"model": model, "model_dir": repo, "warmup": False, "host": "127.0.0.1",
                              "preprocess_threads": 2, "drain_timeout_s": 1.0}
    values.update(overrides)
    return Settings(**values)


@asynccontextmanager
async def grpc_server(settings: Settings) -> AsyncIterator[tuple[Engine, GrpcServer]]:
    """The real Engine and a gRPC server on a free 127.0.0.1 port, stopped afterwards."""
    engine = Engine(settings, Metrics())
    await engine.start()
    handle = await start_grpc(engine, settings, host="127.0.0.1", port=0)
    assert handle is not None
    try:
        yield engine, handle
    finally:
        engine.begin_drain()
        await handle.stop(0.5)
        await engine.stop(0.5)


def encoded_image(seed: int, size: tuple[int, int] = (48, 40), fmt: str = "PNG") -> bytes:
    """A small random-noise image, encoded (PNG or JPEG)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format=fmt)
    return out.getvalue()


def counter(engine: Engine, name: str, **labels: str) -> float:
    """A counter's current value from the engine's metrics registry (0 when never touched)."""
    return engine.metrics.registry.get_sample_value(name, labels) or 0.0


class LiveServer:
    """The serving process's ``service.server.serve`` in a background thread: REST and gRPC, one engine."""

    def __init__(self, settings: Settings) -> None:
        self.grpc_port, self.port = free_port(), free_port()
        self.settings = settings.model_copy(update={"grpc_port": self.grpc_port, "port": self.port})
        self._shutdown: Shutdown | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.engine = Engine(self.settings, Metrics())  # the engine both protocols share
        self._thread = threading.Thread(target=self._run, daemon=True, name="live-server")

    @property
    def rest_url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def grpc_url(self) -> str:
        """``grpc://127.0.0.1:PORT``."""
        return f"grpc://127.0.0.1:{self.grpc_port}"

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._shutdown = Shutdown()
            await serve(self.settings, self._shutdown, self.engine)

        asyncio.run(main())

    def start(self, timeout_s: float = 30.0) -> LiveServer:
        """Start serving; return once /readyz answers 200."""
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.rest_url}/readyz", timeout=1.0).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if not self._thread.is_alive():
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("the live server did not become ready")

    def stop(self) -> None:
        """Shut down (drain) and wait for the thread."""
        if self._loop is not None and self._shutdown is not None:
            self._loop.call_soon_threadsafe(self._shutdown)
        self._thread.join(timeout=30)
