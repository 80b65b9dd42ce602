"""Texts/s of service.clip.tokenizer against open_clip's tokenizer, on realistic caption mixes.

    .venv/bin/python benchmarks/bench_tokenizer.py [--rounds 3] [--batch 64]

Workloads (class names and templates from ../shared/reference/imagenet-prompts.json):
  unique captions   ASCII captions never seen before (our text cache misses every time)
  unique web text   captions with accents, emoji and HTML entities (the ftfy path for both)
  zero-shot prompts 1000 ImageNet classes x 10 templates, each once (building a label set)
  repeated prompts  4000 texts drawn from a pool of 200 (the text cache hits after the first)
Both tokenizers are called with batches of --batch texts and return (N, 77) ids; each round runs
open_clip and ours back to back on the same texts (order alternating), and the best round counts.
Rates are texts per CPU-second of the process (time.process_time), so other load on the machine
changes them little.
Every result is checked equal to open_clip's before it is timed. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from service.clip.tokenizer import Tokenizer

SHARED = Path(os.environ.get("CLIPSERVE_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
ADJECTIVES = ("small", "large", "old", "young", "red", "blue", "green", "white", "black", "wooden", "shiny",
              "blurry", "dark", "bright", "wet")  # fmt: skip
PLACES = ["on a table", "in the grass", "at the beach", "in a city street", "in the snow", "on a white background"]
WEB_EXTRAS = ("café", "naïve", "😀", "🐶🐱", "&amp;", "&quot;hello&quot;", "It’s", "—", "©2021", "日本", "Ünïcödé")


def load_prompts() -> tuple[list[str], list[str]]:
    path = SHARED / "reference" / "imagenet-prompts.json"
    if not path.is_file():
        raise SystemExit(f"{path} not found (set CLIPSERVE_SHARED)")
    data = json.loads(path.read_text())
    return data["classes"], data["templates"]


def captions(classes: list[str], templates: list[str], n: int, seed: int, web: bool) -> list[str]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        text = rng.choice(templates).format(f"{rng.choice(ADJECTIVES)} {rng.choice(classes)}")
        text = f"{text[:-1]} {rng.choice(PLACES)}, photo {seed}-{i}."  # unique by construction
        if web:
            text = f"{text} {rng.choice(WEB_EXTRAS)} {rng.choice(WEB_EXTRAS)}"
        out.append(text)
    return out


def workloads(seed: int) -> dict[str, list[str]]:
    classes, templates = load_prompts()
    rng = random.Random(seed)
    pool = [rng.choice(templates).format(rng.choice(classes)) for _ in range(200)]
    return {
        "unique captions": captions(classes, templates, 4000, seed, web=False),
        "unique web text": captions(classes, templates, 2000, seed, web=True),
        "zero-shot prompts": [t.format(c) for c in classes for t in templates[seed % 8 :: 8]],
        "repeated prompts": [rng.choice(pool) for _ in range(4000)],
    }


def rate(fn: Callable[[list[str]], object], texts: list[str], batch: int) -> float:
    """Texts per CPU-second of this process (robust to other load on a shared machine)."""
    start = time.process_time()
    for i in range(0, len(texts), batch):
        fn(texts[i : i + batch])
    return len(texts) / (time.process_time() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    import open_clip
    import torch

    torch.set_num_threads(1)
    ours = Tokenizer()
    theirs = open_clip.get_tokenizer("ViT-B-32")

    def ref(texts: list[str]) -> np.ndarray:
        return theirs(texts).numpy()

    best: dict[str, dict[str, float]] = {}
    for r in range(args.rounds):
        for name, texts in workloads(seed=r).items():  # new unique texts each round: no text cache hits
            assert np.array_equal(Tokenizer()(texts), ref(texts)), name  # fresh instance: checks, warms nothing
            runs = [("open_clip", ref), ("ours", ours)]
            for label, fn in runs if r % 2 == 0 else runs[::-1]:
                got = rate(fn, texts, args.batch)
                best.setdefault(name, {})[label] = max(best.get(name, {}).get(label, 0.0), got)
    print(f"| workload (batch {args.batch}, 1 thread) | open_clip texts/CPU-s | ours texts/CPU-s | speed-up |")
    print("|---|---:|---:|---:|")
    for name, r in best.items():
        print(f"| {name} | {r['open_clip']:,.0f} | {r['ours']:,.0f} | {r['ours'] / r['open_clip']:.1f}x |")


if __name__ == "__main__":
    main()
