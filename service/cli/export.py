"""``clipserve export``: export a model's image and text towers to ONNX into the model repository.

Argument parsing only; the work is ``service.export.export_model``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from service.clip.model_config import resolve_model
from service.export import DEFAULT_OPSET, MIN_OPSET, ExportOptions, default_name, export_model


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``clipserve export`` flags."""
    parser.add_argument("--model", required=True,
                        help="A model repository entry, ARCH:PRETRAINED, ARCH:/path/to/checkpoint or ARCH.")
    parser.add_argument("--model-dir", type=Path, default=None, help="The model repository (default: models/).")
    parser.add_argument("--name", default=None,
                        help="Name of the exported entry (default: the source entry itself, or a name from --model).")
    parser.add_argument("--precision", choices=["fp32", "fp16", "int8"], default="fp32",
                        help="fp32; fp16 for GPUs (float32 I/O); int8 dynamic quantisation for CPUs.")
    parser.add_argument("--optimize", action="store_true",
                        help="Save ORT's offline-optimised graph (extended level; for the CPU provider).")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset ({MIN_OPSET} or later).")
    parser.add_argument("--cache-dir", type=Path, default=None, help="Where downloaded weights are cached.")


def run(args: argparse.Namespace) -> int:
    """Run ``clipserve export``; returns the process exit code."""
    from service.config import Settings
    from service.errors import ClipServeError

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    model_dir: Path = args.model_dir or Settings().model_dir
    if args.opset < MIN_OPSET:
        print(f"error: --opset must be {MIN_OPSET} or later", file=sys.stderr)
        return 2
    if args.optimize and args.precision == "fp16":
        print("error: --optimize saves a graph optimised for the CPU provider; fp16 is for GPUs", file=sys.stderr)
        return 2
    options = ExportOptions(precision=args.precision, optimize=args.optimize, opset=args.opset)
    try:
        config = resolve_model(args.model, model_dir)
        in_repo = config.path is not None and config.path.parent.resolve() == model_dir.resolve()
        name = args.name or (config.name if in_repo else default_name(args.model))
        out_dir = model_dir / name
        exported = export_model(config, out_dir, name, options, args.cache_dir)
    except (ClipServeError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    assert exported.onnx is not None
    files = [exported.resolve(exported.onnx.image), exported.resolve(exported.onnx.text)]
    sizes = ", ".join(f"{p.name} {p.stat().st_size / 1e6:.1f} MB" for p in files)
    print(f"exported {args.model} ({options.precision}) to {out_dir}: {sizes}; serve it with "
          f"`clipserve serve --model {name}` (model dir {model_dir})")
    return 0
