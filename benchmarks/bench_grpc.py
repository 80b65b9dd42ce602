"""gRPC against REST: throughput and p50/p99 latency of image and text embedding, on one server.

    .venv/bin/python benchmarks/bench_grpc.py [--model fake] [--seconds 4] [--concurrency 1,16]
        [--items 1] [--json out.json]

Starts ``clipserve serve`` as a subprocess on 127.0.0.1 (REST and gRPC on the same engine), then for
each modality (image, text) and concurrency runs each protocol for ``--seconds`` (after a 1 s
warm-up), alternating which protocol goes first. Each request embeds ``--items`` inputs through the
project's own async client transports (httpx for REST with base64 embeddings; grpc.aio for gRPC), so
the figures include client-side encoding and parsing. Images: the shared photos (real JPEGs, ~100 KB),
else synthetic JPEGs; texts: varied captions. ``--model fake`` (default) serves the deterministic fake
backend at 512 dimensions with 224 px preprocessing: the figures then show protocol and serving
overhead, not model compute; name a repository model (``--model clipserve-demo``) to include it.
Load generator and server share the machine. Prints a markdown table; total time is bounded
(``--max-total-s``).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from service.client.grpc import AsyncGrpcTransport  # noqa: E402
from service.client.rest import AsyncRestTransport  # noqa: E402
from service.client.types import AsyncTransport, Input  # noqa: E402
from service.measure.serving import free_port  # noqa: E402
from service.measure.serving import start_server as serve_process  # noqa: E402

SHARED = Path(os.environ.get("CLIPSERVE_SHARED", REPO.parent / "shared"))


@dataclass
class Cell:
    """One measurement: a protocol, modality and concurrency."""

    protocol: str
    modality: str
    concurrency: int
    requests: int
    items_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int


def load_images(n: int = 32) -> list[bytes]:
    """Real photos when present, else synthetic 320x240 JPEGs."""
    photos = sorted((SHARED / "datasets" / "photos").glob("*.JPEG"))[:n]
    if photos:
        return [p.read_bytes() for p in photos]
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)).save(buffer, format="JPEG")
        out.append(buffer.getvalue())
    return out


def texts(n: int = 64) -> list[str]:
    """Varied captions of CLIP-prompt length."""
    things = ["dog", "cat", "red car", "mountain lake", "bowl of soup", "city street at night", "old bicycle"]
    return [f"a photo of a {things[i % len(things)]}, number {i}" for i in range(n)]


def start_server(model: str, model_dir: Path, port: int, grpc_port: int) -> subprocess.Popen[bytes]:
    """``clipserve serve`` in a subprocess; returns once /readyz answers 200."""
    return serve_process(port, ["--model", model, "--model-dir", str(model_dir), "--grpc-port", str(grpc_port)], 180)


async def drive(call: Callable[[], Awaitable[object]], concurrency: int, seconds: float) -> tuple[list[float], int]:
    """``concurrency`` workers calling back to back for ``seconds``; latencies (s) and error count."""
    latencies: list[float] = []
    errors = 0
    end = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal errors
        while time.perf_counter() < end:
            begin = time.perf_counter()
            try:
                await call()
            except Exception:
                errors += 1
                continue
            latencies.append(time.perf_counter() - begin)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, errors


async def measure(transport: AsyncTransport, protocol: str, modality: str, inputs: list[Input], items: int,
                  concurrency: int, seconds: float) -> Cell:
    """One cell: warm up 1 s, then measure ``seconds``."""
    counter = iter(range(10**9))

    def call() -> Awaitable[object]:
        start = next(counter) * items % len(inputs)
        batch = [inputs[(start + j) % len(inputs)] for j in range(items)]
        return transport.embed(batch, None, 60.0)

    await drive(call, concurrency, 1.0)
    latencies, errors = await drive(call, concurrency, seconds)
    ms = np.asarray(latencies) * 1000
    return Cell(protocol, modality, concurrency, len(latencies), len(latencies) * items / seconds,
                float(np.percentile(ms, 50)) if len(ms) else float("nan"),
                float(np.percentile(ms, 99)) if len(ms) else float("nan"), errors)


async def run_all(args: argparse.Namespace, port: int, grpc_port: int) -> list[Cell]:
    """Every modality x concurrency x protocol, alternating protocol order, within the time budget."""
    transports: dict[str, AsyncTransport] = {
        "rest": AsyncRestTransport(f"http://127.0.0.1:{port}"),
        "grpc": AsyncGrpcTransport(f"127.0.0.1:{grpc_port}"),
    }
    inputs: dict[str, list[Input]] = {"image": list(load_images()), "text": list(texts())}
    cells: list[Cell] = []
    started = time.monotonic()
    order = ["rest", "grpc"]
    try:
        for modality in args.modalities:
            for concurrency in args.concurrency:
                for protocol in order:
                    if time.monotonic() - started > args.max_total_s:
                        print(f"time budget of {args.max_total_s}s spent: stopping early", file=sys.stderr)
                        return cells
                    cell = await measure(transports[protocol], protocol, modality, inputs[modality], args.items,
                                         concurrency, args.seconds)
                    print(f"  {cell}", file=sys.stderr)
                    cells.append(cell)
                order.reverse()
    finally:
        for transport in transports.values():
            await transport.close()
    return cells


def table(cells: list[Cell]) -> str:
    """Markdown: one row per modality and concurrency, REST and gRPC side by side."""
    lines = [
        "| input | concurrency | REST items/s | gRPC items/s | gRPC/REST | REST p50 / p99 ms | gRPC p50 / p99 ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    by_key = {(c.modality, c.concurrency, c.protocol): c for c in cells}
    for modality, concurrency in dict.fromkeys((c.modality, c.concurrency) for c in cells):
        rest, grpc = by_key.get((modality, concurrency, "rest")), by_key.get((modality, concurrency, "grpc"))
        if rest is None or grpc is None:
            continue
        lines.append(
            f"| {modality} | {concurrency} | {rest.items_per_s:.1f} | {grpc.items_per_s:.1f} | "
            f"{grpc.items_per_s / rest.items_per_s:.2f} | {rest.p50_ms:.1f} / {rest.p99_ms:.1f} | "
            f"{grpc.p50_ms:.1f} / {grpc.p99_ms:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the table."""
    parser = argparse.ArgumentParser(description="gRPC against REST on one clipserve server.")
    parser.add_argument("--model", default="fake", help="'fake' (protocol overhead) or a repository model")
    parser.add_argument("--model-dir", type=Path, default=REPO / "models")
    parser.add_argument("--seconds", type=float, default=4.0, help="measured seconds per cell")
    parser.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 16])
    parser.add_argument("--modalities", type=lambda s: s.split(","), default=["image", "text"])
    parser.add_argument("--items", type=int, default=1, help="inputs per request")
    parser.add_argument("--max-total-s", type=float, default=300.0, help="stop starting new cells after this")
    parser.add_argument("--json", type=Path, help="also write the cells as JSON")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model_dir
        if args.model == "fake":
            model_dir = Path(tmp)
            (model_dir / "fake").mkdir()
            (model_dir / "fake" / "config.json").write_text(json.dumps(
                {"name": "fake", "architecture": "fake", "backend": "fake", "embed_dim": 512, "image_size": 224}
            ))
        port, grpc_port = free_port(), free_port()
        server = start_server(args.model, model_dir, port, grpc_port)
        try:
            cells = asyncio.run(run_all(args, port, grpc_port))
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
    print(f"model={args.model} items/request={args.items} seconds/cell={args.seconds}")
    print(table(cells))
    if args.json:
        args.json.write_text(json.dumps([asdict(c) for c in cells], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
