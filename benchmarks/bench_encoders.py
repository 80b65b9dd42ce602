"""Images/s and texts/s of TorchBackend's encoders; trimmed against full-77 text; JPEG draft's effect.

    .venv/bin/python benchmarks/bench_encoders.py [--models clipserve-demo,ViT-B-32] [--batch-sizes 1,8,32]
        [--threads 0] [--min-time 2] [--device cpu] [--draft]

Models: repository entries (``models/<name>``, with their weights) or open_clip architectures with
seeded random weights (speed does not depend on the weights). Images: random (N, 3, S, S) pixels.
Texts: CLIP-paper prompts (CIFAR-100 classes x templates, 8-15 tokens), batched as the server does:
"trimmed" is ``TorchBackend.encode_texts`` on tokens padded to the batch's longest text; "full 77" is
open_clip's ``encode_text`` on (N, 77) tokens. Each cell: one warm-up call, then calls until
``--min-time`` seconds (at least 3); the median call gives items/s. ``--draft`` also embeds the 125
shared photos with and without JPEG draft decoding and reports the cosine between the two.
Prints markdown tables.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from service.clip.labelsets import get_label_set
from service.clip.model_config import resolve_model
from service.clip.preprocess import ImagePreprocessor, PreprocessConfig
from service.clip.tokenizer import Tokenizer, pad_batch
from service.config import REPO_MODELS_DIR
from service.runtime.torch_backend import TorchBackend

SHARED = Path(os.environ.get("CLIPSERVE_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))


def median_seconds(call: Callable[[], object], min_time: float) -> float:
    """Median duration of ``call`` after one warm-up, repeated for ``min_time`` seconds (3 calls at least)."""
    call()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < 3 or time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def prompts(n: int) -> list[str]:
    """``n`` distinct CLIP-paper prompts, cycling CIFAR-100 classes through its templates."""
    classes, templates = get_label_set("cifar100")
    texts = [t.replace("{}", c) for t in templates for c in classes]
    return texts[:n]


def rows_for(backend: TorchBackend, batch_sizes: list[int], min_time: float) -> list[str]:
    """One markdown row per batch size: images/s, texts/s trimmed, texts/s full 77, speed-up."""
    tokenizer = Tokenizer(backend.info.context_length)
    size, rows = backend.info.image_size, []
    for n in batch_sizes:
        pixels = np.random.default_rng(0).standard_normal((n, 3, size, size)).astype(np.float32)
        texts = prompts(n)
        trimmed = pad_batch([tokenizer.encode(t) for t in texts])
        full = torch.from_numpy(tokenizer(texts)).to(backend.model.logit_scale.device)

        def full_77(tokens: torch.Tensor = full) -> object:
            with torch.inference_mode():
                return torch.nn.functional.normalize(backend.model.encode_text(tokens).float(), dim=-1).cpu()

        t_img = median_seconds(lambda p=pixels: backend.encode_images(p), min_time)
        t_trim = median_seconds(lambda t=trimmed: backend.encode_texts(t), min_time)
        t_full = median_seconds(full_77, min_time)
        rows.append(
            f"| {backend.info.name} | {n} | {n / t_img:.1f} | {n / t_trim:.1f} | {n / t_full:.1f} "
            f"| {t_full / t_trim:.1f}x | {trimmed.shape[1]} |"
        )
        print(rows[-1], flush=True)
    return rows


def draft_change(backend: TorchBackend) -> str:
    """Mean and min cosine between embeddings of the shared photos decoded exactly and in draft mode."""
    photos = sorted((SHARED / "datasets" / "photos").glob("*.JPEG"))
    if not photos:
        return f"| {backend.info.name} | no photos under {SHARED} | | |"
    datas = [p.read_bytes() for p in photos]
    config = PreprocessConfig.from_model_config(backend.config)
    embeddings = []
    for draft in (False, True):
        pre = ImagePreprocessor(config, max_pixels=100_000_000, draft=draft)
        embeddings.append(np.concatenate([
            backend.encode_images(pre.stack([pre(d) for d in datas[i : i + 32]])) for i in range(0, len(datas), 32)
        ]))
    cosine = (embeddings[0] * embeddings[1]).sum(axis=1)
    return f"| {backend.info.name} | {len(datas)} | {cosine.mean():.5f} | {cosine.min():.5f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="clipserve-demo,ViT-B-32",
                        help="Comma-separated repository entries or open_clip architectures (random weights).")
    parser.add_argument("--batch-sizes", default="1,8,32")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default).")
    parser.add_argument("--min-time", type=float, default=2.0, help="Seconds of timed calls per cell.")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--draft", action="store_true", help="Also measure JPEG draft mode's embedding change.")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    backends = []
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        try:  # an architecture name alone has seeded random weights
            backends.append(TorchBackend(resolve_model(name, REPO_MODELS_DIR), device=args.device))
        except Exception as exc:  # a missing entry should not stop the other models
            print(f"skipping {name}: {exc}")
    print(f"\ntorch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}\n")
    print("| model | batch | images/s | texts/s trimmed | texts/s full 77 | trimmed speed-up | positions run |")
    print("|---|---|---|---|---|---|---|")
    for backend in backends:
        rows_for(backend, [int(b) for b in args.batch_sizes.split(",")], args.min_time)
    if args.draft:
        print("\n| model | photos | mean cosine (draft vs exact) | min cosine |")
        print("|---|---|---|---|")
        for backend in backends:
            print(draft_change(backend), flush=True)


if __name__ == "__main__":
    main()
