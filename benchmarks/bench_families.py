"""Speed against accuracy across model families: REST images/s and texts/s on ONNX Runtime, per model.

    .venv/bin/python benchmarks/bench_families.py [--models MobileCLIP2-S0,MobileCLIP2-S2,ViT-B-32,ViT-B-16-SigLIP2]
        [--concurrency 16 1] [--seconds 20] [--rounds 2] [--cache-dir DIR]
        [--server-args "ViT-B-16-SigLIP2=--some-flag value"] [--skip-texts ViT-B-16-SigLIP2]

Each model is an open_clip architecture with seeded random weights (speed does not depend on the
weights), served alone by ``clipserve serve --model ARCH --backend onnx`` (fp32, CPU provider): the first
start exports it (cached under ``--cache-dir``, default ``~/.cache/clipserve``; the export is not timed).
The load is ``clipserve bench``'s (``service.measure.serving``): one item per request, closed loops of
``--concurrency`` clients over HTTP/1.1 keep-alive, the 125 shared photos and CLIP-style prompts;
configurations alternate for ``--rounds`` rounds. The table puts each model's published ImageNet
zero-shot top-1 beside its speed (``PUBLISHED``, with its source), so a user can pick speed against accuracy.

SigLIP models tokenise with their own Hugging Face tokenizer: where the server needs a tokenizer folder
for them (offline), pass its flag with ``--server-args MODEL=FLAGS``; ``--skip-texts MODEL`` measures
images only and says so in the table, and a model whose text requests fail is reported the same way.
A model whose server does not start is skipped with the reason.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from service.measure.serving import (  # noqa: E402
    DEFAULT_PHOTOS,
    Result,
    Runner,
    Sample,
    free_port,
    load,
    load_photos,
    make_texts,
    measure,
    request_bodies,
    start_server,
)

MODELS = "MobileCLIP2-S0,MobileCLIP2-S2,ViT-B-32,ViT-B-16-SigLIP2"
# ImageNet-1k zero-shot top-1 (%) as published for the released weights of each architecture.
PUBLISHED = {
    "MobileCLIP2-S0": ("71.5", "MobileCLIP2 paper (Faghri et al., 2025), Table 1; apple/MobileCLIP2-S0 model card"),
    "MobileCLIP2-S2": ("77.2", "MobileCLIP2 paper (Faghri et al., 2025), Table 1; apple/MobileCLIP2-S2 model card"),
    "ViT-B-32": ("63.2", "CLIP paper (Radford et al., 2021), OpenAI weights (open_clip ViT-B-32:openai)"),
    "ViT-B-16-SigLIP2": ("78.2", "SigLIP 2 paper (Tschannen et al., 2025), Table 1, B/16 at 224 px"),
}


class TextsFailed(RuntimeError):
    """The server answered text requests with errors (no tokenizer for this model, say)."""


def runners(port: int, bodies: dict[str, list[bytes]], concurrencies: list[int]) -> dict[str, Runner]:
    """One runner per modality and concurrency; the first one of a modality that fails raises."""
    def run(modality: str, reqs: list[bytes], conc: int, seconds: float) -> Sample:
        latencies, errors, wall = asyncio.run(load("127.0.0.1", port, reqs, conc, seconds))
        if errors and modality == "text":
            raise TextsFailed(f"{len(errors)} text requests answered {sorted(set(errors))}")
        return len(latencies), wall, latencies

    out: dict[str, Runner] = {}
    for modality, reqs in bodies.items():
        for conc in concurrencies:
            out[f"{modality} c={conc}"] = lambda s, m=modality, r=reqs, c=conc: run(m, r, c, s)
    return out


def measure_model(model: str, args: argparse.Namespace, photos: list[bytes], texts: list[str]) -> str:
    """Start the model's server, measure it, stop it; one markdown row."""
    port = free_port()
    flags = ["--model", model, "--backend", "onnx", *shlex.split(args.extra.get(model, ""))]
    if args.cache_dir:
        flags += ["--cache-dir", str(args.cache_dir)]
    try:
        proc = start_server(port, flags, timeout_s=args.start_timeout)
    except RuntimeError as exc:
        return f"| {model} | not measured: the server did not start ({exc}) |"
    note = ""
    try:
        bodies = request_bodies("127.0.0.1", port, photos, texts)
        if model in args.skip_texts:
            bodies.pop("text")
            note = "texts skipped (--skip-texts)"
        asyncio.run(load("127.0.0.1", port, bodies["image"], 2, 2.0))  # warm connections and caches
        try:
            results = measure(runners(port, bodies, args.concurrency), args.seconds, args.rounds)
        except TextsFailed as exc:
            note = f"texts not measured: {exc}"
            bodies.pop("text")
            results = measure(runners(port, bodies, args.concurrency), args.seconds, args.rounds)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    return row(model, {r.name: r for r in results}, args.concurrency, note)


def row(model: str, results: dict[str, Result], concurrencies: list[int], note: str) -> str:
    """| model | images/s and texts/s at each concurrency | p50 at c=1 | published top-1 | note |"""
    cells = []
    for conc in concurrencies:
        for modality in ("image", "text"):
            result = results.get(f"{modality} c={conc}")
            cells.append(f"{result.items_per_s:.1f}" if result else "-")
    for modality in ("image", "text"):
        result = results.get(f"{modality} c=1")
        cells.append(f"{result.p50_ms:.1f}" if result else "-")
    top1, source = PUBLISHED.get(model, ("?", "not known here"))
    return f"| {model} | {' | '.join(cells)} | {top1} | {note or source} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=MODELS, help="comma-separated open_clip architectures")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16, 1])
    parser.add_argument("--seconds", type=float, default=20.0, help="time per configuration, over all rounds")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS, help="folder of JPEG photos")
    parser.add_argument("--cache-dir", type=Path, default=None, help="where the servers cache their exports")
    parser.add_argument("--start-timeout", type=float, default=1800.0, help="seconds a start (and export) may take")
    parser.add_argument("--server-args", action="append", default=[], metavar="MODEL=FLAGS",
                        help="more clipserve serve flags for one model (a tokenizer folder, say)")
    parser.add_argument("--skip-texts", action="append", default=[], metavar="MODEL", help="measure images only")
    args = parser.parse_args()
    args.extra = dict(item.split("=", 1) for item in args.server_args)
    photos, texts = load_photos(args.photos, 125), make_texts(512)
    header = [f"{m}/s c={c}" for c in args.concurrency for m in ("images", "texts")]
    print(f"{os.cpu_count()} CPUs, ONNX Runtime fp32 (CPU provider), {args.seconds:.0f} s per configuration "
          f"in {args.rounds} rounds\n")
    print(f"| model | {' | '.join(header)} | image p50 ms c=1 | text p50 ms c=1 | ImageNet zero-shot top-1 % "
          f"| source / note |")
    print("|---|" + "---:|" * (len(header) + 3) + "---|")
    for model in [m.strip() for m in args.models.split(",") if m.strip()]:
        print(measure_model(model, args, photos, texts), flush=True)


if __name__ == "__main__":
    main()
