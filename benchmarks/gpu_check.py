"""GPU check of the ONNX Runtime backend: parity and throughput per execution provider and precision.

    bash scripts/gpu_check.sh            # installs onnxruntime-gpu if missing, then runs this
    python benchmarks/gpu_check.py [--models clipserve-demo,ViT-B-32] [--budget-s 420]
        [--providers CUDAExecutionProvider,TensorrtExecutionProvider] [--work-dir /tmp/clipserve-gpu-check]

Each model is exported once (fp32) and derived to fp16, then embedded by ``OnnxBackend`` on each
provider at each precision, and by ``TorchBackend`` on the same device (fp32, with TF32 off: the
reference; and fp16). Parity: the least cosine and largest absolute difference against the torch
fp32 rows, over 32 shared photos and 32 texts of mixed lengths. Throughput: images/s at batch 1 and
32, texts/s at batch 32 (median call after the first; the first call, where TensorRT builds its
engines, is timed apart). A provider that does not start is reported, never measured as another.
Cells not started within ``--budget-s`` are listed as skipped. Prints one markdown table.

With ``--providers CPUExecutionProvider`` it runs on a machine without a GPU (a smoke test of this
script).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from bench_onnx import timed  # the sibling script (run as a script, its folder is on sys.path)

from service.clip.model_config import ModelConfig, read_config, resolve_model
from service.clip.preprocess import ImagePreprocessor, PreprocessConfig
from service.clip.tokenizer import Tokenizer
from service.config import REPO_MODELS_DIR
from service.export import ExportOptions, derive, export_model
from service.runtime.base import Backend

SHARED = Path(os.environ.get("CLIPSERVE_SHARED", Path(__file__).resolve().parents[2] / "shared"))
PHOTOS = sorted((SHARED / "datasets" / "photos").glob("*.JPEG"))
TEXTS = ["a photo of a dog", "tench", "a red car", "an aerial photograph of a coastline with cliffs, a lighthouse "
         "and a small harbour full of fishing boats on a bright summer morning"] * 8
PRECISIONS = ("fp32", "fp16")


@dataclass
class Row:
    """One line of the table."""

    model: str
    runtime: str  # "torch" or the ONNX Runtime provider
    precision: str
    status: str = "ok"
    cosine: float = float("nan")  # least cosine against torch fp32, images and texts
    max_diff: float = float("nan")
    first_call_s: float = float("nan")
    speeds: dict[str, float] = field(default_factory=dict)


def median_rate(call: Callable[[], object], items: int, seconds: float) -> float:
    """Items/s of the median call (after a warm-up call), calls repeated for ``seconds`` (3 at least)."""
    median, _ = timed(call, seconds)
    return items / median


def inputs(config: ModelConfig) -> tuple[np.ndarray, np.ndarray]:
    """32 preprocessed photos (seeded noise where the shared photos are absent) and 32 texts of mixed lengths."""
    tokens = Tokenizer(config.context_length)(TEXTS)
    if not PHOTOS:
        print(f"no photos under {SHARED} (set CLIPSERVE_SHARED): using seeded noise images", file=sys.stderr)
        size = config.image_size
        return np.random.default_rng(0).standard_normal((32, 3, size, size)).astype(np.float32), tokens
    pre = ImagePreprocessor(PreprocessConfig.from_model_config(config), max_pixels=10**8)
    return pre.stack([pre(p.read_bytes()) for p in PHOTOS[:32]]), tokens


def measure(row: Row, backend: Backend, data: tuple[np.ndarray, np.ndarray], reference: np.ndarray | None,
            seconds: float) -> Row:
    """Fill ``row``: first-call time, parity against ``reference``, throughput."""
    pixels, tokens = data
    t0 = time.perf_counter()
    rows = np.concatenate([backend.encode_images(pixels), backend.encode_texts(tokens)])
    row.first_call_s = time.perf_counter() - t0
    if reference is not None:
        row.cosine = float((rows * reference).sum(axis=1).min())
        row.max_diff = float(np.abs(rows - reference).max())
    row.speeds = {
        "img/s b1": median_rate(functools.partial(backend.encode_images, pixels[:1]), 1, seconds),
        "img/s b32": median_rate(functools.partial(backend.encode_images, pixels), len(pixels), seconds),
        "txt/s b32": median_rate(functools.partial(backend.encode_texts, tokens), len(tokens), seconds),
    }
    return row


def torch_rows(model: str, config: ModelConfig, device: str, data: tuple[np.ndarray, np.ndarray],
               seconds: float) -> tuple[list[Row], np.ndarray]:
    """Torch fp32 (the reference rows, TF32 off) and fp16 on ``device``."""
    import torch

    from service.runtime.torch_backend import TorchBackend

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    rows, reference = [], None
    for precision in PRECISIONS if device.startswith("cuda") else ("fp32",):
        backend = TorchBackend(config, device=device, precision=precision)
        row = measure(Row(model, f"torch {device}", precision), backend, data, reference, seconds)
        if reference is None:
            reference = np.concatenate([backend.encode_images(data[0]), backend.encode_texts(data[1])])
            row.cosine, row.max_diff = 1.0, 0.0
        rows.append(row)
        backend.close()
    assert reference is not None
    return rows, reference


def onnx_row(model: str, folder: Path, provider: str, precision: str, device: str, work_dir: Path,
             data: tuple[np.ndarray, np.ndarray], reference: np.ndarray, seconds: float) -> Row:
    """One provider at one precision; a provider that does not start says so."""
    from service.runtime.onnx_backend import OnnxBackend, SessionConfig

    row = Row(model, provider.removesuffix("ExecutionProvider"), precision)
    options = SessionConfig(providers=(provider,), device=device, max_batch_size=32, cache_dir=work_dir / "cache")
    try:
        backend = OnnxBackend(read_config(folder), options)
    except Exception as exc:
        row.status = f"failed to load: {str(exc)[:120]}"
        return row
    if backend.info.providers[0] != provider:
        row.status = f"unavailable (fell back to {backend.info.providers[0]})"
    else:
        measure(row, backend, data, reference, seconds)
    backend.close()
    return row


def check_model(model: str, args: argparse.Namespace, deadline: float) -> list[Row]:
    """Every row of one model: torch, then each provider at each precision."""
    fp32 = args.work_dir / f"{model}-fp32"
    if not (fp32 / "config.json").is_file():
        export_model(resolve_model(model, REPO_MODELS_DIR), fp32, fp32.name, ExportOptions())
    fp16 = args.work_dir / f"{model}-fp16"
    if not (fp16 / "config.json").is_file():
        derive(fp32, fp16, fp16.name, ExportOptions(precision="fp16"))
    data = inputs(read_config(fp32))
    rows, reference = torch_rows(model, resolve_model(model, REPO_MODELS_DIR), args.device, data, args.seconds)
    for provider in args.providers.split(","):
        for precision, folder in (("fp32", fp32), ("fp16", fp16)):
            if time.monotonic() > deadline:
                rows.append(Row(model, provider.removesuffix("ExecutionProvider"), precision, "skipped (budget)"))
                continue
            rows.append(onnx_row(model, folder, provider, precision, args.device, args.work_dir, data, reference,
                                 args.seconds))
            print(f"done: {model} {provider} {precision}", file=sys.stderr, flush=True)
    return rows


def table(rows: list[Row]) -> str:
    """The markdown table."""
    keys = ["img/s b1", "img/s b32", "txt/s b32"]
    lines = ["| model | runtime | precision | status | min cosine vs torch fp32 | max abs diff | first call s | "
             + " | ".join(keys) + " |", "|---|---|---|---|---:|---:|---:|" + "---:|" * len(keys)]
    for r in rows:
        speeds = " | ".join(f"{r.speeds[k]:.1f}" if k in r.speeds else "" for k in keys)
        lines.append(f"| {r.model} | {r.runtime} | {r.precision} | {r.status} | {r.cosine:.6f} | {r.max_diff:.2e} | "
                     f"{r.first_call_s:.2f} | {speeds} |")
    return "\n".join(lines).replace("nan", "")


def environment() -> str:
    """One line: onnxruntime, its providers, torch and the GPU."""
    import onnxruntime as ort
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"
    return (f"onnxruntime {ort.__version__} ({', '.join(ort.get_available_providers())}); torch {torch.__version__}; "
            f"{gpu}")


def main(argv: list[str] | None = None) -> int:
    """Run the checks and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="clipserve-demo,ViT-B-32")
    parser.add_argument("--providers", default="CUDAExecutionProvider,TensorrtExecutionProvider")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--seconds", type=float, default=1.0, help="time per throughput figure")
    parser.add_argument("--budget-s", type=float, default=420.0, help="start no cell after this many seconds")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/clipserve-gpu-check"))
    args = parser.parse_args(argv)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + args.budget_s
    rows: list[Any] = []
    for model in args.models.split(","):
        rows += check_model(model, args, deadline)
    print(environment())
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
