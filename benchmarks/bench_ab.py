"""A/B of server configurations: both servers up at once, the load alternating between them by round.

    .venv/bin/python benchmarks/bench_ab.py --a "" --b "--no-adaptive-batching --max-delay-ms 2" \\
        --modality text --concurrency 16 --seconds 8 --rounds 4

Each side is ``clipserve serve --model MODEL`` plus its flags. The load generator is ``clipserve
bench``'s (one item per request, HTTP/1.1 keep-alive over raw sockets). Only one server is under load
at a time; alternating rounds spread a slow spell of a shared host over both sides, so the medians
compare the configurations rather than the moments they ran at.
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import statistics
import sys
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


def main(argv: list[str] | None = None) -> int:
    """Print each round's throughput and p50, then the medians per side."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a", default="", help="flags of side A (a quoted string)")
    parser.add_argument("--b", default="", help="flags of side B (a quoted string)")
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--modality", choices=["text", "image"], default="text")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=8.0, help="per round and side")
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args(argv)
    photos, texts = load_photos(DEFAULT_PHOTOS, 125), make_texts(512)
    sides, servers = {}, []
    try:
        for label, flags in (("A", args.a), ("B", args.b)):
            port = free_port()
            servers.append(start_server(port, ["--model", args.model, *shlex.split(flags)]))
            sides[label] = request_bodies("127.0.0.1", port, photos, texts)[args.modality], port
        for reqs, port in sides.values():
            asyncio.run(load("127.0.0.1", port, reqs, args.concurrency, 2.0))  # warm-up
        rates: dict[str, list[float]] = {label: [] for label in sides}
        p50s: dict[str, list[float]] = {label: [] for label in sides}
        for i in range(args.rounds):
            for label, (reqs, port) in sides.items():
                latencies, _, wall = asyncio.run(load("127.0.0.1", port, reqs, args.concurrency, args.seconds))
                rates[label].append(len(latencies) / wall)
                p50s[label].append(statistics.median(latencies) * 1000)
                print(f"round {i + 1} {label}: {rates[label][-1]:.1f} items/s, p50 {p50s[label][-1]:.1f} ms")
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=60)
    for label, flags in (("A", args.a), ("B", args.b)):
        print(f"{label} [{flags or 'defaults'}]: median {statistics.median(rates[label]):.1f} items/s, "
              f"p50 {statistics.median(p50s[label]):.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
