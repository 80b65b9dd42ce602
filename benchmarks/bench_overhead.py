"""Serving overhead: the server's CPU time per REST request, with a model that costs next to nothing.

    .venv/bin/python benchmarks/bench_overhead.py [--modality text] [--concurrency 16] [--seconds 5] [--rounds 3]

Starts ``clipserve serve`` on the deterministic fake model (512 dimensions, real 224 px image
preprocessing), drives it with ``clipserve bench``'s load generator (one item per request, HTTP/1.1
keep-alive over raw sockets) and reads the server process's CPU time (all its threads, from /proc)
before and after each round. CPU time per request is far steadier than wall-clock throughput on a
shared machine, so it is the figure to compare between two versions of the serving path (HTTP
parsing, routing, validation, engine, batcher, response encoding). Linux only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from service.measure.serving import (  # noqa: E402
    DEFAULT_PHOTOS,
    free_port,
    load,
    load_photos,
    make_texts,
    request_bodies,
    start_server,
)


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of every thread of process ``pid`` so far."""
    ticks = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def main(argv: list[str] | None = None) -> int:
    """Print the server CPU milliseconds per request, per round and their median."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modality", choices=["text", "image"], default="text")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=5.0, help="per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--server-arg", action="append", default=[], help="extra flag for clipserve serve")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "fake").mkdir()
        (Path(tmp) / "fake" / "config.json").write_text(json.dumps(
            {"name": "fake", "architecture": "fake", "backend": "fake", "embed_dim": 512, "image_size": 224}
        ))
        port = free_port()
        server = start_server(port, ["--model", "fake", "--model-dir", tmp, *args.server_arg])
        try:
            bodies = request_bodies("127.0.0.1", port, load_photos(DEFAULT_PHOTOS, 125), make_texts(512))
            reqs = bodies[args.modality]
            asyncio.run(load("127.0.0.1", port, reqs, args.concurrency, 1.0))  # warm-up
            per_request = []
            for i in range(args.rounds):
                before = process_cpu_s(server.pid)
                latencies, _, wall = asyncio.run(load("127.0.0.1", port, reqs, args.concurrency, args.seconds))
                per_request.append((process_cpu_s(server.pid) - before) / len(latencies) * 1000)
                print(f"round {i + 1}: {len(latencies) / wall:.0f} requests/s, "
                      f"server CPU {per_request[-1]:.3f} ms/request")
        finally:
            server.terminate()
            server.wait(timeout=60)
    print(f"{args.modality} c={args.concurrency}: median server CPU {statistics.median(per_request):.3f} ms/request")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
