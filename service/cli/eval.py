"""``clipserve eval``: zero-shot top-1/top-5 accuracy of a model on a folder-per-class image set.

Argument parsing only; the measuring is ``service.measure.accuracy``. The model is loaded as the server
loads it, on ``--backend`` (default: the model's own backend, from its config).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from service.clip.zeroshot import label_set_names
from service.config import SettingError
from service.errors import ClipServeError
from service.measure.accuracy import EvalResult, eval_settings, evaluate_model


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``clipserve eval``."""
    parser.add_argument("model", help="a model repository entry (clipserve-demo) or ARCH:PRETRAINED")
    parser.add_argument("data", type=Path, help="image set: a directory or .tar of <root>/<class>/<image>")
    parser.add_argument("--label-set", help=f"bundled label set ({', '.join(label_set_names())}); "
                        "default: the one whose classes match the folder names")
    parser.add_argument("--templates", choices=("ensemble", "single"), default="ensemble",
                        help="prompt ensemble of the label set, or the single 'a photo of a {}.'")
    parser.add_argument("--limit", type=int, help="evaluate a fixed, seeded, class-balanced subset of N images")
    parser.add_argument("--seed", type=int, default=0, help="seed of the --limit subset")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--model-dir", type=Path, help="model repository (default: the server's setting)")
    parser.add_argument("--backend", choices=("torch", "onnx"),
                        help="runtime to measure (default: the model's own, from its config); onnx exports "
                        "the model on demand into the server's cache when it has no ONNX files")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--threads", type=int, default=0, help="inference threads (default: the runtime's)")
    parser.add_argument("--json", type=Path, help="also write the result as JSON to this file")


def run(args: argparse.Namespace) -> int:
    """Run an evaluation from parsed arguments; print the figures. 0 on success, 2 on bad input."""
    for flag, value, least in (("--limit", args.limit, 1), ("--batch-size", args.batch_size, 1),
                               ("--threads", args.threads, 0)):
        if value is not None and value < least:
            print(f"error: {flag} must be >= {least}", file=sys.stderr)
            return 2
    try:
        settings = eval_settings(args.backend, args.device, args.model_dir, args.threads, args.batch_size)
        result = evaluate_model(args.model, args.data, settings, args.label_set, args.templates, args.limit,
                                args.batch_size, args.seed)
    except (ClipServeError, SettingError, FileNotFoundError, ValidationError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(_report(result))
    if args.json:
        try:
            args.json.write_text(json.dumps(asdict(result), indent=2) + "\n")
        except OSError as e:
            print(f"error: cannot write {args.json}: {e}", file=sys.stderr)
            return 2
    return 0


def _report(r: EvalResult) -> str:
    label_set: Any = r.label_set or "folder names"
    return (f"{r.model} ({r.backend}) on {r.data}: {r.images} images, {r.classes} classes ({label_set}), "
            f"{r.templates} template(s): top-1 {100 * r.top1:.2f}%  top-5 {100 * r.top5:.2f}%  "
            f"({r.seconds:.1f}s)")
