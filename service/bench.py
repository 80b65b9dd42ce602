"""``clipserve bench``: REST serving throughput and latency against the raw in-process model.

One run measures, for the same model on the same machine:

- raw in-process: decode + preprocess + encode at batch 32 (throughput) and batch 1 (latency), and
  tokenize + encode for texts (trimmed to the longest text, as the server does);
- the real server (started as a subprocess on a free loopback port, or ``--url``) under a closed
  loop of ``--concurrency`` clients, one item per request: throughput and p50/p95/p99 latency.

It prints one markdown table with the ratios. The load generator speaks HTTP/1.1 keep-alive over raw
asyncio streams with prebuilt request bodies: an httpx client costs ~1 ms of CPU per request, which on
a 2-core machine would be taken from the server under test.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DEFAULT_PHOTOS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "photos"


@dataclass
class Result:
    """One measured configuration."""

    name: str
    items_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    count: int


def _percentiles(latencies: Sequence[float]) -> tuple[float, float, float]:
    qs = np.percentile(np.asarray(latencies) * 1000.0, [50, 95, 99])
    return float(qs[0]), float(qs[1]), float(qs[2])


def load_photos(folder: Path, limit: int) -> list[bytes]:
    """Read up to ``limit`` JPEG photos as bytes."""
    files = sorted(folder.glob("*.JPEG")) + sorted(folder.glob("*.jpg"))
    if not files:
        raise SystemExit(f"no photos found in {folder} (pass --photos)")
    return [f.read_bytes() for f in files[:limit]]


def make_texts(count: int) -> list[str]:
    """Realistic short captions: CLIP prompt templates filled with ImageNet class names."""
    from service.clip.labelsets import get_label_set

    imagenet = get_label_set("imagenet")
    rng = np.random.default_rng(0)
    return [
        imagenet.templates[int(rng.integers(len(imagenet.templates)))].format(
            imagenet.classes[int(rng.integers(len(imagenet.classes)))]
        )
        for _ in range(count)
    ]


# ---------------------------------------------------------------- raw in-process baseline


def _time_loop(fn: Callable[[], None], items: int, seconds: float) -> tuple[float, list[float]]:
    """Call ``fn`` repeatedly for about ``seconds``; return items/s and per-call latencies."""
    fn()  # warm
    latencies: list[float] = []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or len(latencies) < 3:
        t0 = time.perf_counter()
        fn()
        latencies.append(time.perf_counter() - t0)
    return items * len(latencies) / sum(latencies), latencies


def raw_baseline(model: str, photos: list[bytes], texts: list[str], seconds: float) -> list[Result]:
    """In-process throughput of the same model: batch 32 and batch 1, images and texts."""
    from service.clip.model_config import resolve_model
    from service.clip.preprocess import ImagePreprocessor, PreprocessConfig
    from service.clip.tokenizer import Tokenizer, pad_batch
    from service.config import Settings
    from service.runtime.factory import create_backend

    settings = Settings(model=model)
    config = resolve_model(model, settings.model_dir)
    backend = create_backend(config, settings)
    config = getattr(backend, "config", config)
    pre = ImagePreprocessor(PreprocessConfig.from_model_config(config), max_pixels=settings.max_image_pixels)
    tok = Tokenizer(config.context_length)
    results = []
    for batch in (32, 1):
        cycle = itertools.cycle(photos)  # every photo in turn, as the server sees them

        def run_images(batch: int = batch, cycle: Iterator[bytes] = cycle) -> None:
            backend.encode_images(pre.stack([pre(next(cycle)) for _ in range(batch)]))

        rate, lat = _time_loop(run_images, batch, seconds)
        results.append(Result(f"raw image batch {batch}", rate, *_percentiles(lat), len(lat) * batch))
        chunk = texts[:batch]

        def run_texts(chunk: list[str] = chunk) -> None:
            backend.encode_texts(pad_batch([tok.encode(t) for t in chunk]))

        rate, lat = _time_loop(run_texts, batch, seconds)
        results.append(Result(f"raw text batch {batch}", rate, *_percentiles(lat), len(lat) * batch))
    backend.close()
    return results


# ---------------------------------------------------------------- load generator


def _request(host: str, port: int, body: bytes) -> bytes:
    head = (
        f"POST /embed HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    await reader.readexactly(length)
    return status


async def _client(host: str, port: int, bodies: list[bytes], offset: int, stop_at: float,
                  latencies: list[float], errors: list[int]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    i = offset
    try:
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            writer.write(bodies[i % len(bodies)])
            status = await _read_response(reader)
            if status == 200:
                latencies.append(time.perf_counter() - t0)
            else:
                errors.append(status)
            i += 1
    finally:
        writer.close()


async def load(
    host: str, port: int, bodies: list[bytes], concurrency: int, seconds: float
) -> tuple[list[float], list[int], float]:
    """A closed loop of ``concurrency`` clients for ``seconds``; returns latencies, errors, wall time."""
    latencies: list[float] = []
    errors: list[int] = []
    start = time.perf_counter()
    stop_at = start + seconds
    await asyncio.gather(*(
        _client(host, port, bodies, i * 7, stop_at, latencies, errors) for i in range(concurrency)
    ))
    return latencies, errors, time.perf_counter() - start


def request_bodies(host: str, port: int, photos: list[bytes], texts: list[str]) -> dict[str, list[bytes]]:
    """Prebuilt one-item /embed requests for each modality."""
    images = [json.dumps({"inputs": [{"image": base64.b64encode(p).decode()}]}).encode() for p in photos]
    words = [json.dumps({"inputs": [{"text": t}]}).encode() for t in texts]
    return {
        "image": [_request(host, port, b) for b in images],
        "text": [_request(host, port, b) for b in words],
    }


def measure_server(host: str, port: int, bodies: dict[str, list[bytes]], concurrencies: Sequence[int],
                   seconds: float) -> list[Result]:
    """Throughput and latency of the server for each modality and concurrency."""
    results = []
    for modality, reqs in bodies.items():
        asyncio.run(load(host, port, reqs, 2, min(2.0, seconds)))  # warm connections and caches
        for conc in concurrencies:
            lat, errors, wall = asyncio.run(load(host, port, reqs, conc, seconds))
            if errors:
                print(f"warning: {len(errors)} non-200 answers ({sorted(set(errors))})", file=sys.stderr)
            results.append(Result(f"REST {modality} c={conc}", len(lat) / wall, *_percentiles(lat), len(lat)))
    return results


# ---------------------------------------------------------------- server process


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(port: int, serve_args: Sequence[str], timeout_s: float = 600) -> subprocess.Popen[bytes]:
    """Start ``clipserve serve`` on 127.0.0.1:port and wait until /readyz answers 200.

    ``serve_args`` are more flags (``--model``...); given after the defaults, they override them
    (``--grpc-port 0`` by default).
    """
    import httpx

    cmd = [sys.executable, "-m", "service", "serve", "--host", "127.0.0.1", "--port", str(port),
           "--grpc-port", "0", "--log-level", "WARNING", *serve_args]
    proc = subprocess.Popen(cmd, cwd=Path(__file__).resolve().parents[1])
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"server not ready in {timeout_s:.0f} s")


# ---------------------------------------------------------------- report


def report(results: list[Result]) -> str:
    """A markdown table, plus the ratios the serving issue asks for."""
    by_name = {r.name: r for r in results}
    lines = ["| configuration | items/s | p50 ms | p95 ms | p99 ms | items |", "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r.name} | {r.items_per_s:.1f} | {r.p50_ms:.1f} | {r.p95_ms:.1f} | {r.p99_ms:.1f} | {r.count} |"
              for r in results]
    notes = []
    for modality in ("image", "text"):
        raw32, raw1 = by_name.get(f"raw {modality} batch 32"), by_name.get(f"raw {modality} batch 1")
        c16, c1 = by_name.get(f"REST {modality} c=16"), by_name.get(f"REST {modality} c=1")
        if raw32 and c16:
            notes.append(f"- {modality}: REST c=16 / raw batch 32 throughput = "
                         f"{c16.items_per_s / raw32.items_per_s:.1%}")
        if raw1 and c1:
            notes.append(f"- {modality}: REST c=1 p50 - raw batch-1 p50 = {c1.p50_ms - raw1.p50_ms:+.1f} ms")
    return "\n".join([*lines, "", *notes])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``clipserve bench``."""
    parser.add_argument("--model", default="ViT-B-32", help="model to serve and measure (default: ViT-B-32, random)")
    parser.add_argument("--url", default=None, help="measure a running server (host:port) instead of starting one")
    parser.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS, help="folder of JPEG photos")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--seconds", type=float, default=15.0, help="duration of each measurement")
    parser.add_argument("--no-baseline", action="store_true", help="skip the raw in-process measurement")
    parser.add_argument("--server-arg", action="append", default=[], help="extra flag for clipserve serve")


def run(args: argparse.Namespace) -> int:
    """Measure and print the table."""
    photos = load_photos(args.photos, 125)
    texts = make_texts(512)
    results = [] if args.no_baseline else raw_baseline(args.model, photos, texts, args.seconds)
    proc = None
    if args.url:
        host, _, port_s = args.url.rpartition(":")
        port = int(port_s)
    else:
        host, port = "127.0.0.1", free_port()
        proc = start_server(port, ["--model", args.model, *args.server_arg])
    try:
        results += measure_server(host, port, request_bodies(host, port, photos, texts), args.concurrency,
                                  args.seconds)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=60)
    print(f"model {args.model}, {os.cpu_count()} CPUs, {statistics.mean([len(p) for p in photos]) / 1e3:.0f} kB "
          f"mean photo size, {args.seconds:.0f} s per measurement\n")
    print(report(results))
    return 0


def main() -> None:
    """``python -m service.bench``."""
    parser = argparse.ArgumentParser(prog="clipserve bench", description=__doc__)
    add_arguments(parser)
    raise SystemExit(run(parser.parse_args()))


if __name__ == "__main__":
    main()
