"""Overload: capacity, then an open loop at ``--factor`` x capacity; is it shed (429) instead of queued?

For each request size (images per ``/embed`` request) one server is started (``clipserve serve`` on a
free loopback port, the demo model by default) and:

1. capacity: a closed loop of max(4, 64 / size) clients for ``--capacity-seconds``: requests per second
   answered 200;
2. overload: requests sent at ``--factor`` x that rate, open loop (one every 1/rate s whatever the
   answers), for ``--seconds``; each has a client timeout of ``--client-timeout`` s;
3. recovery: once the load stops, a one-image request every 0.2 s until one answers 200;
4. memory: the server's RSS before the load, its peak (sampled every 0.25 s), and ``--settle`` s later.

It prints one table row per size: status counts, client timeouts, connection errors, p50/p99 of the
200s, RSS before/peak/after, and the time until the server answered again. Loopback only, bounded.

    .venv/bin/python benchmarks/bench_overload.py                      # sizes 1 and 32, 60 s each
    .venv/bin/python benchmarks/bench_overload.py --sizes 8 --seconds 20 --settle 10
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.measure.serving import DEFAULT_PHOTOS, free_port, load, load_photos, start_server

HOST = "127.0.0.1"


@dataclass
class Outcome:
    """What the open loop saw."""

    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    retry_after_missing: int = 0  # 429/503 answers without Retry-After
    timeouts: int = 0
    connection_errors: int = 0
    latencies: list[float] = field(default_factory=list)  # of the 200s


def http_request(port: int, body: bytes) -> bytes:
    head = (f"POST /embed HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


def bodies(port: int, photos: list[bytes], size: int, count: int = 16) -> list[bytes]:
    """``count`` prebuilt requests of ``size`` images each, cycling through the photos."""
    out = []
    for i in range(count):
        chosen = [photos[(i * size + j) % len(photos)] for j in range(size)]
        payload = {"inputs": [{"image": base64.b64encode(p).decode()} for p in chosen]}
        out.append(http_request(port, json.dumps(payload).encode()))
    return out


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Status and whether a Retry-After header came; the body is read and dropped."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    lines = [line.lower() for line in head.split(b"\r\n")]
    length = next((int(line.split(b":", 1)[1]) for line in lines if line.startswith(b"content-length:")), 0)
    await reader.readexactly(length)
    return status, any(line.startswith(b"retry-after:") for line in lines)


async def one_request(port: int, request: bytes, timeout_s: float, out: Outcome) -> None:
    """One request on a connection of its own; an answer may come before the body is all sent."""
    begin = time.perf_counter()
    writer = None
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), timeout_s)
        writer.write(request)
        status, retry_after = await asyncio.wait_for(read_answer(reader), timeout_s - (time.perf_counter() - begin))
    except asyncio.TimeoutError:
        out.timeouts += 1
        return
    except (OSError, asyncio.IncompleteReadError):
        out.connection_errors += 1
        return
    finally:
        if writer is not None:
            writer.close()
    out.statuses[status] += 1
    if status == 200:
        out.latencies.append(time.perf_counter() - begin)
    elif status in (429, 503) and not retry_after:
        out.retry_after_missing += 1


async def open_loop(port: int, requests: list[bytes], rate: float, seconds: float, timeout_s: float) -> Outcome:
    """Send at ``rate`` per second for ``seconds`` whatever the answers; wait for every answer or timeout."""
    out = Outcome()
    tasks = []
    start = time.perf_counter()
    for i in range(int(rate * seconds)):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one_request(port, requests[i % len(requests)], timeout_s, out)))
    await asyncio.gather(*tasks)
    return out


def rss_mb(pid: int) -> float:
    """Resident memory of a process in MB (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def sample_rss(pid: int, stop: asyncio.Event, peak: list[float]) -> None:
    while not stop.is_set():
        peak[0] = max(peak[0], rss_mb(pid))
        await asyncio.sleep(0.25)


async def recovery_s(port: int, probe: bytes) -> float:
    """Seconds until a one-image request answers 200 (sent every 0.2 s, 5 s client timeout each)."""
    begin = time.perf_counter()
    while time.perf_counter() - begin < 120:
        out = Outcome()
        await one_request(port, probe, 5.0, out)
        if out.statuses[200]:
            return time.perf_counter() - begin
        await asyncio.sleep(0.2)
    return float("inf")


async def run_size(args: argparse.Namespace, photos: list[bytes], size: int) -> str:
    port = free_port()
    proc = start_server(port, ["--model", args.model, "--request-timeout-s", str(args.client_timeout),
                               *args.server_arg])
    try:
        requests, probe = bodies(port, photos, size), bodies(port, photos, 1, 1)[0]
        await load(HOST, port, requests, 2, 3.0)  # warm-up
        before = rss_mb(proc.pid)
        clients = max(4, 64 // size)  # enough items in flight for full batches, within the admission bound
        latencies, errors, wall = await load(HOST, port, requests, clients, args.capacity_seconds)
        capacity = len(latencies) / wall
        peak = [before]
        stop = asyncio.Event()
        sampler = asyncio.create_task(sample_rss(proc.pid, stop, peak))
        out = await open_loop(port, requests, args.factor * capacity, args.seconds, args.client_timeout)
        recovered = await recovery_s(port, probe)
        stop.set()
        await sampler
        await asyncio.sleep(args.settle)
        after = rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=120)
    return row(size, capacity, errors, out, before, peak[0], after, recovered)


def row(size: int, capacity: float, capacity_errors: list[int], out: Outcome, before: float, peak: float,
        after: float, recovered: float) -> str:
    total = sum(out.statuses.values()) + out.timeouts + out.connection_errors
    lat = sorted(out.latencies)
    p50 = statistics.median(lat) if lat else float("nan")
    p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))] if lat else float("nan")
    statuses = ", ".join(f"{code}: {n}" for code, n in sorted(out.statuses.items()))
    return (f"| {size} | {capacity:.2f} ({len(capacity_errors)} non-200) | {total} | {statuses} | "
            f"{out.retry_after_missing} | {out.timeouts} | {out.connection_errors} | {p50:.2f} | {p99:.2f} | "
            f"{before:.0f} / {peak:.0f} / {after:.0f} | {recovered:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="clipserve-demo")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 32], help="images per request")
    parser.add_argument("--factor", type=float, default=4.0, help="open-loop rate as a multiple of capacity")
    parser.add_argument("--seconds", type=float, default=60.0, help="open-loop duration")
    parser.add_argument("--capacity-seconds", type=float, default=10.0)
    parser.add_argument("--client-timeout", type=float, default=30.0, help="client timeout and server request timeout")
    parser.add_argument("--settle", type=float, default=60.0, help="seconds after the load before RSS is read again")
    parser.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS)
    parser.add_argument("--server-arg", action="append", default=[], help="extra flag for clipserve serve")
    args = parser.parse_args()
    photos = load_photos(args.photos, 125)
    print(f"model {args.model}, {os.cpu_count()} CPUs, {args.factor:g}x capacity for {args.seconds:g} s, "
          f"client timeout {args.client_timeout:g} s, RSS after {args.settle:g} s\n")
    print("| images/request | capacity req/s | sent | statuses | 429/503 without Retry-After | client timeouts | "
          "connection errors | p50 s (200s) | p99 s (200s) | RSS MB before / peak / after | answers again after s |")
    print("|---:|---:|---:|---|---:|---:|---:|---:|---:|---|---:|")
    for size in args.sizes:
        print(asyncio.run(run_size(args, photos, size)), flush=True)


if __name__ == "__main__":
    main()
