"""MobileCLIP's re-parameterisation at load time: image-tower speed before and after, on torch and ORT.

    .venv/bin/python benchmarks/bench_reparam.py [--models MobileCLIP2-S0,MobileCLIP2-S2] [--batch-sizes 1,8]
        [--threads 0] [--min-time 3] [--rounds 3] [--no-onnx]

Each model is open_clip's architecture with seeded random weights (speed does not depend on them), as
open_clip builds it ("reference": FastViT's train-time branches and batch norms) and re-parameterised by
``service.clip.reparam.reparameterize`` (timm's ``reparameterize_model``; what clipserve serves). The
image tower runs random (N, 3, S, S) pixels; the text towers of MobileCLIP2 have nothing to fold. ORT:
each variant's image tower exported with torch's dynamo exporter (opset 18), CPU provider, graph
optimisation ``all`` (which fuses a convolution with its batch norm by itself, but not the parallel
branches). Cells alternate between the two variants for ``--rounds`` rounds; each cell is the median
call of ``--min-time`` seconds of calls after one warm-up. The cosine between the two variants'
embeddings is printed too (the re-parameterised model computes the same function).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench_encoders import median_seconds  # noqa: E402  (benchmarks/, the script's folder)

from service.clip.reparam import reparameterize  # noqa: E402


class ImageTower(torch.nn.Module):
    """A model's image tower with L2-normalised output, as the server's export wraps it."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(self.model.encode_image(pixels), dim=-1)


def ort_session(tower: ImageTower, size: int, folder: Path, name: str) -> Any:
    """The image tower exported to ONNX (dynamic batch) and opened on ONNX Runtime's CPU provider."""
    import onnxruntime as ort

    path = folder / f"{name}.onnx"
    batch = torch.export.Dim("batch", min=1, max=4096)
    with torch.no_grad():
        torch.onnx.export(tower, (torch.zeros(2, 3, size, size),), str(path), dynamo=True, opset_version=18,
                          input_names=["pixels"], output_names=["embeddings"],
                          dynamic_shapes={"pixels": {0: batch}}, verbose=False)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def variants(name: str, onnx: bool, folder: Path) -> dict[str, dict[str, Callable[[np.ndarray], np.ndarray]]]:
    """runtime -> variant -> embed(pixels) for one architecture."""
    import open_clip

    torch.manual_seed(0)
    reference = open_clip.create_model(name).eval().requires_grad_(False)
    folded = copy.deepcopy(reference)
    assert reparameterize(folded), f"{name} has nothing to re-parameterise"
    towers = {"reference": ImageTower(reference).eval(), "re-parameterised": ImageTower(folded).eval()}

    def on_torch(tower: ImageTower) -> Callable[[np.ndarray], np.ndarray]:
        def run(pixels: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return tower(torch.from_numpy(pixels)).numpy()
        return run

    runs = {"torch": {k: on_torch(t) for k, t in towers.items()}}
    if onnx:
        size = int(reference.visual.image_size[0])
        sessions = {k: ort_session(t, size, folder, f"{name}-{i}") for i, (k, t) in enumerate(towers.items())}
        runs["ORT"] = {k: (lambda p, s=s: s.run(None, {"pixels": p})[0]) for k, s in sessions.items()}
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="MobileCLIP2-S0,MobileCLIP2-S2")
    parser.add_argument("--batch-sizes", default="1,8")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default).")
    parser.add_argument("--min-time", type=float, default=3.0, help="Seconds of timed calls per cell.")
    parser.add_argument("--rounds", type=int, default=3, help="Rounds alternating the two variants.")
    parser.add_argument("--no-onnx", action="store_true", help="torch only.")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    print("| model | runtime | batch | reference images/s | re-parameterised images/s | speed-up | min cosine |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in [m.strip() for m in args.models.split(",") if m.strip()]:
            for runtime, runs in variants(name, not args.no_onnx, Path(tmp)).items():
                for n in [int(b) for b in args.batch_sizes.split(",")]:
                    print(row(name, runtime, runs, n, args), flush=True)


def row(name: str, runtime: str, runs: dict[str, Callable[[np.ndarray], np.ndarray]], n: int,
        args: argparse.Namespace) -> str:
    """One table row: both variants at batch ``n``, alternating for ``args.rounds`` rounds."""
    import open_clip

    size = int(open_clip.get_model_config(name)["vision_cfg"]["image_size"])
    pixels = np.random.default_rng(n).standard_normal((n, 3, size, size)).astype(np.float32)
    seconds: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(args.rounds):
        for variant, run in runs.items():
            seconds[variant].append(median_seconds(lambda r=run: r(pixels), args.min_time))
    a, b = (statistics.median(seconds[k]) for k in ("reference", "re-parameterised"))
    out = [runs[k](pixels) for k in ("reference", "re-parameterised")]
    cosine = float((out[0] * out[1]).sum(axis=1).min())
    return f"| {name} | {runtime} | {n} | {n / a:.1f} | {n / b:.1f} | {a / b:.2f}x | {cosine:.7f} |"

if __name__ == "__main__":
    main()
