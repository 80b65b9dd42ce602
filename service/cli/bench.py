"""``clipserve bench``: serving throughput and latency over REST against the raw model in-process.

Argument parsing and the run's order only; the measuring is ``service.measure.serving``.
"""

from __future__ import annotations

import argparse
import os
import statistics
from collections.abc import Callable
from pathlib import Path

from service.measure.serving import (
    DEFAULT_PHOTOS,
    Runner,
    cpu_steal,
    free_port,
    load_photos,
    make_texts,
    measure,
    raw_runners,
    report,
    request_bodies,
    rest_runners,
    start_server,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``clipserve bench``."""
    parser.add_argument("--model", default="ViT-B-32", help="model to serve and measure (default: ViT-B-32, random)")
    parser.add_argument("--backend", choices=["torch", "onnx"], default=None,
                        help="backend of both the server and the raw baseline (default: the model's own)")
    parser.add_argument("--url", default=None, help="measure a running server (host:port) instead of starting one")
    parser.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS, help="folder of JPEG photos")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--seconds", type=float, default=15.0, help="time per configuration, over all rounds")
    parser.add_argument("--rounds", type=int, default=3, help="measure the configurations in turn, this many times")
    parser.add_argument("--no-baseline", action="store_true", help="skip the raw in-process measurement")
    parser.add_argument("--server-arg", action="append", default=[], help="extra flag for clipserve serve")


def run(args: argparse.Namespace) -> int:
    """Measure and print the table."""
    photos = load_photos(args.photos, 125)
    texts = make_texts(512)
    proc = None
    if args.url:
        host, _, port_s = args.url.rpartition(":")
        port = int(port_s)
    else:
        host, port = "127.0.0.1", free_port()
        backend_flag = ["--backend", args.backend] if args.backend else []
        proc = start_server(port, ["--model", args.model, *backend_flag, *args.server_arg])
    close: Callable[[], None] = lambda: None  # noqa: E731
    steal0 = cpu_steal()
    try:
        runners: dict[str, Runner] = {}
        if not args.no_baseline:
            runners, close = raw_runners(args.model, photos, texts, args.backend)
        bodies = request_bodies(host, port, photos, texts)
        runners |= rest_runners(host, port, bodies, args.concurrency)
        order = sorted(runners, key=lambda name: "image" not in name)  # images first, then texts
        results = measure({name: runners[name] for name in order}, args.seconds, args.rounds)
    finally:
        close()
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=60)
    steal1 = cpu_steal()
    steal = (steal1[0] - steal0[0]) / max(1, steal1[1] - steal0[1])
    print(f"model {args.model}, {os.cpu_count()} CPUs, {statistics.mean([len(p) for p in photos]) / 1e3:.0f} kB "
          f"mean photo size, {args.seconds:.0f} s per configuration in {args.rounds} rounds, "
          f"CPU steal {steal:.1%}\n")
    print(report(results))
    return 0
