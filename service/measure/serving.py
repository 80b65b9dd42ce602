"""``clipserve bench``: REST serving throughput and latency against the raw in-process model.

One run measures, for the same model on the same machine:

- raw in-process: decode + preprocess + encode at batch 32 and 16 (throughput) and batch 1
  (latency), and tokenize + encode for texts (trimmed to the longest text, as the server does);
- the real server (started as a subprocess on a free loopback port, or ``--url``) under a closed
  loop of ``--concurrency`` clients, one item per request: throughput and p50/p95/p99 latency.

The configurations are measured in turn, ``--rounds`` times each, so that a slow spell of the host
falls on all of them alike. It prints one markdown table with the ratios and the CPU steal (time
the hypervisor gave to other tenants) during the run. The load generator speaks HTTP/1.1 keep-alive over raw
asyncio streams with prebuilt request bodies: an httpx client costs ~1 ms of CPU per request, which on
a 2-core machine would be taken from the server under test.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import itertools
import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

DEFAULT_PHOTOS = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "photos"


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


# ---------------------------------------------------------------- measuring in rounds

# items, wall seconds, latency of each call (raw) or request (REST)
Sample = tuple[int, float, list[float]]
Runner = Callable[[float], Sample]
RAW_BATCHES = (32, 16, 1)  # 16: the largest batch that 16 clients with one item each can form


@dataclass
class Tally:
    """One configuration's samples, summed over the rounds."""

    name: str
    items: int = 0
    wall_s: float = 0.0
    latencies: list[float] = field(default_factory=list)

    def add(self, sample: Sample) -> None:
        """Add one round's sample."""
        self.items += sample[0]
        self.wall_s += sample[1]
        self.latencies += sample[2]

    def result(self) -> Result:
        """Throughput over all rounds; percentiles over every latency."""
        return Result(self.name, self.items / self.wall_s, *_percentiles(self.latencies), self.items)


def measure(runners: dict[str, Runner], seconds: float, rounds: int) -> list[Result]:
    """Run every configuration ``rounds`` times, in turn, ``seconds / rounds`` each time.

    Interleaving spreads slow spells of a shared machine (other tenants of the host) over all the
    configurations instead of letting one of them take them all.
    """
    tallies = {name: Tally(name) for name in runners}
    for _ in range(rounds):
        for name, runner in runners.items():
            tallies[name].add(runner(seconds / rounds))
    return [tally.result() for tally in tallies.values()]


def _time_loop(fn: Callable[[], None], items: int, seconds: float) -> Sample:
    """Call ``fn`` repeatedly for about ``seconds`` (at least once)."""
    latencies: list[float] = []
    begin = time.perf_counter()
    while not latencies or time.perf_counter() - begin < seconds:
        t0 = time.perf_counter()
        fn()
        latencies.append(time.perf_counter() - t0)
    return items * len(latencies), time.perf_counter() - begin, latencies


def raw_runners(
    model: str, photos: list[bytes], texts: list[str], backend_name: str | None = None
) -> tuple[dict[str, Runner], Callable[[], None]]:
    """In-process configurations of the same model (batch 32, 16 and 1), and a function that frees it.

    Images: decode + preprocess + encode; texts: tokenize + encode, padded to the batch's longest text.
    Both take the inputs in turn, as the server sees them.
    """
    from service.config import Settings
    from service.measure.model import ServingModel

    served = ServingModel.load(model, Settings(model=model, backend=backend_name))
    next_photo, next_text = itertools.cycle(photos).__next__, itertools.cycle(texts).__next__

    def images(batch: int) -> None:
        served.encode_images([next_photo() for _ in range(batch)])

    def words(batch: int) -> None:
        served.encode_texts([next_text() for _ in range(batch)])

    runners: dict[str, Runner] = {}
    for modality, encode in (("image", images), ("text", words)):
        for batch in RAW_BATCHES:
            encode(batch)  # warm-up
            runners[f"raw {modality} batch {batch}"] = functools.partial(
                _time_loop, functools.partial(encode, batch), batch
            )
    return runners, served.close


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


def rest_runners(
    host: str, port: int, bodies: dict[str, list[bytes]], concurrencies: Sequence[int]
) -> dict[str, Runner]:
    """One configuration per modality and concurrency; warms the server's connections and caches first."""
    def run(reqs: list[bytes], conc: int, seconds: float) -> Sample:
        lat, errors, wall = asyncio.run(load(host, port, reqs, conc, seconds))
        if errors:
            print(f"warning: {len(errors)} non-200 answers ({sorted(set(errors))})", file=sys.stderr)
        return len(lat), wall, lat

    runners: dict[str, Runner] = {}
    for modality, reqs in bodies.items():
        asyncio.run(load(host, port, reqs, 2, 2.0))
        for conc in concurrencies:
            runners[f"REST {modality} c={conc}"] = functools.partial(run, reqs, conc)
    return runners


def measure_server(host: str, port: int, bodies: dict[str, list[bytes]], concurrencies: Sequence[int],
                   seconds: float) -> list[Result]:
    """Throughput and latency of the server for each modality and concurrency (one round)."""
    return measure(rest_runners(host, port, bodies, concurrencies), seconds, rounds=1)


# ---------------------------------------------------------------- server process


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the one helper: tests and benchmarks import it from here)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(proc: subprocess.Popen[bytes], url: str, timeout_s: float) -> None:
    """Poll ``url``/readyz until it answers 200; RuntimeError if ``proc`` exits first or ``timeout_s`` passes."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server not ready in {timeout_s:.0f} s")


def start_server(port: int, serve_args: Sequence[str], timeout_s: float = 600) -> subprocess.Popen[bytes]:
    """Start ``clipserve serve`` on 127.0.0.1:port and wait until /readyz answers 200.

    ``serve_args`` are more flags (``--model``...); given after the defaults, they override them
    (``--grpc-port 0`` by default).
    """
    cmd = [sys.executable, "-m", "service", "serve", "--host", "127.0.0.1", "--port", str(port),
           "--grpc-port", "0", "--log-level", "WARNING", *serve_args]
    proc = subprocess.Popen(cmd, cwd=Path(__file__).resolve().parents[2])
    try:
        wait_ready(proc, f"http://127.0.0.1:{port}", timeout_s)
    except RuntimeError:
        proc.kill()
        proc.wait()
        raise
    return proc


# ---------------------------------------------------------------- report


def report(results: list[Result]) -> str:
    """A markdown table, plus the ratios the serving issue asks for."""
    by_name = {r.name: r for r in results}
    lines = ["| configuration | items/s | p50 ms | p95 ms | p99 ms | items |", "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r.name} | {r.items_per_s:.1f} | {r.p50_ms:.1f} | {r.p95_ms:.1f} | {r.p99_ms:.1f} | {r.count} |"
              for r in results]
    notes = []
    for modality in ("image", "text"):
        c16, c1 = by_name.get(f"REST {modality} c=16"), by_name.get(f"REST {modality} c=1")
        for batch in (32, 16):
            raw = by_name.get(f"raw {modality} batch {batch}")
            if raw and c16:
                notes.append(f"- {modality}: REST c=16 / raw batch {batch} throughput = "
                             f"{c16.items_per_s / raw.items_per_s:.1%}")
        raw1 = by_name.get(f"raw {modality} batch 1")
        if raw1 and c1:
            notes.append(f"- {modality}: REST c=1 p50 - raw batch-1 p50 = {c1.p50_ms - raw1.p50_ms:+.1f} ms")
    return "\n".join([*lines, "", *notes])


def cpu_steal() -> tuple[int, int]:
    """(steal, total) jiffies of all CPUs so far (Linux; (0, 0) elsewhere): time the host gave others."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    return (fields[7] if len(fields) > 7 else 0), sum(fields[:8])
