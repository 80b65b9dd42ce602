"""ONNX Runtime against PyTorch on the CPU: encoder speed in-process, through the REST API, and accuracy.

    .venv/bin/python benchmarks/bench_onnx.py speed [--models ViT-B-32,clipserve-demo] [--batch-sizes 1,8,32]
        [--min-time 3] [--rest-seconds 15] [--no-rest] [--work-dir /tmp/clipserve-bench-onnx]
    .venv/bin/python benchmarks/bench_onnx.py accuracy [--model clipserve-demo] [--limit N]
        [--data ../shared/datasets/cifar10/test.tar]

``speed`` exports each model (fp32, and int8 dynamic quantisation) into ``--work-dir`` once (reused
when there), then measures three backends on the same inputs: torch fp32 (``TorchBackend``), ORT fp32
and ORT int8 (``OnnxBackend``), at each ``--threads`` setting. In-process: images/s and
texts/s at each batch size (preprocessed pixels of the shared photos, tokenised CLIP-paper prompts
padded to the batch's longest as the server does); one warm-up call, then calls for ``--min-time``
seconds (3 at least), the median call gives items/s and the CPU time of all calls gives items per
CPU-second. Each backend runs in a process of its own (ORT's and torch's waiting threads spin). REST: a
``clipserve serve --backend ...`` subprocess per backend under the serving benchmark's load generator
(``service.measure.serving``: one item per request, concurrency 16).

``accuracy`` runs the zero-shot evaluation of ``clipserve eval`` (``service.measure.accuracy``: label set,
prompt ensemble, same images, the model loaded through the server's backend factory) with the model on
torch and exported to ORT fp32 and int8.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from service.clip.model_config import ModelConfig, read_config, resolve_model
from service.clip.preprocess import ImagePreprocessor, PreprocessConfig
from service.clip.tokenizer import Tokenizer, pad_batch
from service.config import REPO_MODELS_DIR
from service.measure.accuracy import EvalResult, eval_settings, evaluate_model
from service.runtime.base import Backend

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
PRECISIONS = ("fp32", "int8")
BACKENDS = ("torch fp32", "onnx fp32", "onnx int8")


@dataclass
class Cell:
    """One measured configuration."""

    model: str
    backend: str
    where: str  # "in-process" or "REST c=16"
    threads: int  # inference threads (0: the runtime's default)
    modality: str
    batch: int  # batch size; REST: items per request (1)
    items_per_s: float
    items_per_cpu_s: float | None  # in-process only
    load: float = 0.0  # the machine's 1-minute load average when the cell was measured


def exported(model: str, precision: str, work_dir: Path) -> Path:
    """``model`` exported to ONNX at ``precision`` under ``work_dir`` (once, then reused).

    int8 is derived from the fp32 export (quantising it is what ``clipserve export --precision int8``
    does after exporting).
    """
    from service.export import ExportOptions, derive, export_model

    name = f"{model.replace(':', '-')}-{precision}"
    folder = work_dir / name
    if not (folder / "config.json").is_file():
        print(f"exporting {model} ({precision}) to {folder}", file=sys.stderr)
        if precision == "fp32":
            export_model(resolve_model(model, REPO_MODELS_DIR), folder, name, ExportOptions())
        else:
            derive(exported(model, "fp32", work_dir), folder, name, ExportOptions(precision=precision))  # type: ignore[arg-type]
    return folder


def load_backend(model: str, name: str, work_dir: Path, threads: int) -> tuple[ModelConfig, Backend]:
    """Backend ``name`` (one of BACKENDS) of ``model`` with ``threads`` intra-op threads (0: default)."""
    if name == "torch fp32":
        from service.runtime.torch_backend import TorchBackend

        backend = TorchBackend(resolve_model(model, REPO_MODELS_DIR), threads=threads)
        return backend.config, backend
    from service.runtime.onnx_backend import OnnxBackend, SessionConfig

    config = read_config(exported(model, name.split()[1], work_dir))
    return config, OnnxBackend(config, SessionConfig(threads=threads))


def timed(call: Callable[[], object], min_time: float) -> tuple[float, float]:
    """(median seconds per call, CPU seconds per call) after one warm-up call."""
    call()
    times: list[float] = []
    cpu0, start = time.process_time(), time.perf_counter()
    while len(times) < 3 or time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), (time.process_time() - cpu0) / len(times)


def prompts(n: int) -> list[str]:
    """CLIP-paper style captions (templates x ImageNet classes), as the serving benchmark uses."""
    from service.measure.serving import make_texts

    return make_texts(n)


def measure_backend(model: str, name: str, work_dir: Path, batches: Sequence[int], min_time: float,
                    threads: int) -> list[Cell]:
    """Images/s and texts/s of one backend at each batch size (run alone in its process)."""
    config, backend = load_backend(model, name, work_dir, threads)
    pre = ImagePreprocessor(PreprocessConfig.from_model_config(config), max_pixels=10**8)
    photos = sorted((SHARED / "datasets" / "photos").glob("*.JPEG"))[: max(batches)]
    pixels = pre.stack([pre(p.read_bytes()) for p in photos])
    tokenizer = Tokenizer(config.context_length)
    texts = prompts(max(batches))
    cells = []
    for batch in batches:
        tokens = pad_batch([tokenizer.encode(t) for t in texts[:batch]])
        for modality, call in (("image", functools.partial(backend.encode_images, pixels[:batch])),
                               ("text", functools.partial(backend.encode_texts, tokens))):
            seconds, cpu = timed(call, min_time)
            cells.append(Cell(model, name, "in-process", threads, modality, batch, batch / seconds, batch / cpu,
                              os.getloadavg()[0]))
            print(f"{model} {name} t={threads} {modality} batch {batch}: {batch / seconds:.1f}/s", file=sys.stderr)
    backend.close()
    return cells


def measure_in_process(model: str, work_dir: Path, batches: Sequence[int], min_time: float,
                       threads: int) -> list[Cell]:
    """Each backend measured in a process of its own.

    In one process, ORT's intra-op threads spin after each run and torch's OpenMP threads wait
    actively too, each slowing the other down; a process per backend measures each as served.
    """
    for precision in PRECISIONS:
        exported(model, precision, work_dir)
    cells = []
    for name in BACKENDS:
        command = [sys.executable, __file__, "--work-dir", str(work_dir), "cells", "--model", model,
                   "--backend", name, "--batch-sizes", ",".join(map(str, batches)), "--min-time", str(min_time),
                   "--threads", str(threads)]
        done = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True)
        cells += [Cell(**row) for row in json.loads(done.stdout)]
    return cells


def measure_rest(model: str, work_dir: Path, seconds: float, threads: int, concurrency: int = 16) -> list[Cell]:
    """Items/s through ``clipserve serve --backend X`` at ``concurrency`` (one item per request)."""
    from service.measure.serving import free_port, load_photos, make_texts, measure_server, request_bodies, start_server

    photos, texts = load_photos(SHARED / "datasets" / "photos", 125), make_texts(512)
    cells = []
    for name in BACKENDS:
        backend, precision = name.split()
        folder = exported(model, precision if backend == "onnx" else "fp32", work_dir)
        port = free_port()
        server = start_server(port, ["--model", folder.name, "--backend", backend, "--model-dir", str(work_dir),
                                     "--inference-threads", str(threads)])
        try:
            bodies = request_bodies("127.0.0.1", port, photos, texts)
            for result in measure_server("127.0.0.1", port, bodies, [concurrency], seconds):
                modality = result.name.split()[1]
                where = f"REST c={concurrency}"
                cells.append(Cell(model, name, where, threads, modality, 1, result.items_per_s, None,
                                  os.getloadavg()[0]))
                print(f"{model} {name} t={threads} {where} {modality}: {result.items_per_s:.1f}/s", file=sys.stderr)
        finally:
            server.terminate()
            server.wait(timeout=60)
    return cells


def speed_table(cells: list[Cell]) -> str:
    """One markdown row per (model, where, threads, input, batch): each backend's items/s and the ratios."""
    lines = ["| model | where | threads | input | batch | torch fp32 /s | ORT fp32 /s | ORT int8 /s "
             "| ORT fp32 / torch | ORT int8 / torch | per CPU-s: torch, ORT fp32, ORT int8 | load avg |",
             "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---|---|"]
    rows: dict[tuple[str, str, int, str, int], dict[str, Cell]] = {}
    for c in cells:
        rows.setdefault((c.model, c.where, c.threads, c.modality, c.batch), {})[c.backend] = c
    for (model, where, threads, modality, batch), row in rows.items():
        speeds = [row[b].items_per_s for b in BACKENDS]
        per_cpu = [row[b].items_per_cpu_s for b in BACKENDS]
        cpu = ", ".join(f"{x:.1f}" for x in per_cpu if x is not None) or "n/a"
        loads = [row[b].load for b in BACKENDS]
        load = f"{min(loads):.1f}-{max(loads):.1f}"
        lines.append(f"| {model} | {where} | {threads or 'default'} | {modality} | {batch} | {speeds[0]:.1f} "
                     f"| {speeds[1]:.1f} | {speeds[2]:.1f} | {speeds[1] / speeds[0]:.2f}x "
                     f"| {speeds[2] / speeds[0]:.2f}x | {cpu} | {load} |")
    return "\n".join(lines)


def accuracy(model: str, data: Path, limit: int | None, work_dir: Path) -> list[tuple[str, EvalResult]]:
    """Zero-shot results of ``model`` on torch fp32 and on its ORT fp32 and int8 exports.

    Each is loaded as ``clipserve eval`` (and the server) loads it (``service.measure.accuracy.evaluate_model``:
    resolve_model, ensure_onnx, the backend factory): torch from the model's weights, ORT from the exports
    in ``work_dir`` taken as a model repository.
    """
    on_torch = eval_settings("torch", model_dir=REPO_MODELS_DIR)
    results = [("torch fp32", evaluate_model(model, data, on_torch, limit=limit))]
    for precision in PRECISIONS:
        folder = exported(model, precision, work_dir)
        on_onnx = eval_settings("onnx", model_dir=work_dir)
        results.append((f"onnx {precision}", evaluate_model(folder.name, data, on_onnx, limit=limit)))
    return results


def accuracy_table(results: list[tuple[str, EvalResult]]) -> str:
    """Top-1/top-5 per backend and the change against torch, in points."""
    base = results[0][1]
    lines = ["| backend | images | top-1 % | top-5 % | top-1 change (points) | top-5 change (points) |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, r in results:
        lines.append(f"| {name} | {r.images} | {100 * r.top1:.2f} | {100 * r.top5:.2f} | "
                     f"{100 * (r.top1 - base.top1):+.2f} | {100 * (r.top5 - base.top5):+.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, measure, print markdown."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/clipserve-bench-onnx"),
                        help="where the exports go (reused across runs)")
    sub = parser.add_subparsers(dest="command", required=True)
    speed = sub.add_parser("speed", help="images/s and texts/s, in-process and over REST")
    speed.add_argument("--models", default="ViT-B-32,clipserve-demo")
    speed.add_argument("--batch-sizes", default="1,8,32")
    speed.add_argument("--min-time", type=float, default=3.0)
    speed.add_argument("--rest-seconds", type=float, default=15.0)
    speed.add_argument("--no-rest", action="store_true")
    speed.add_argument("--threads", default="1,0", help="inference threads to measure at (0: runtime default)")
    worker = sub.add_parser("cells", help="(internal) one backend's in-process cells, as JSON")
    worker.add_argument("--model", required=True)
    worker.add_argument("--backend", choices=BACKENDS, required=True)
    worker.add_argument("--batch-sizes", default="1,8,32")
    worker.add_argument("--min-time", type=float, default=3.0)
    worker.add_argument("--threads", type=int, default=0)
    acc = sub.add_parser("accuracy", help="zero-shot accuracy on torch, ORT fp32 and ORT int8")
    acc.add_argument("--model", default="clipserve-demo")
    acc.add_argument("--data", type=Path, default=SHARED / "datasets" / "cifar10" / "test.tar")
    acc.add_argument("--limit", type=int, default=None, help="a balanced subset of N images (default: all)")
    args = parser.parse_args(argv)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    if args.command == "accuracy":
        print(accuracy_table(accuracy(args.model, args.data, args.limit, args.work_dir)))
        return 0
    batches = [int(b) for b in args.batch_sizes.split(",")]
    if args.command == "cells":
        found = measure_backend(args.model, args.backend, args.work_dir, batches, args.min_time, args.threads)
        print(json.dumps([asdict(c) for c in found]))
        return 0
    cells: list[Cell] = []
    for model in args.models.split(","):
        for threads in (int(t) for t in args.threads.split(",")):
            cells += measure_in_process(model, args.work_dir, batches, args.min_time, threads)
            if not args.no_rest:
                cells += measure_rest(model, args.work_dir, args.rest_seconds, threads)
    print(speed_table(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
