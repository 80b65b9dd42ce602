"""The ``clipserve`` command: ``serve``, ``eval``, ``export``, ``bench``, ``client``.

Each subcommand lives in its own module with ``add_arguments(parser)`` and ``run(args) -> int``;
only the chosen one is imported, so ``clipserve serve`` with the ONNX backend never imports torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("service.cli.serve", "Serve models over REST (and gRPC)."),
    "eval": ("service.cli.eval", "Zero-shot top-1 accuracy of a model on a folder-per-class image set."),
    "export": ("service.cli.export", "Export a model's image and text towers to ONNX into the model repository."),
    "bench": ("service.cli.bench", "Measure serving throughput and latency against the raw model."),
    "client": ("service.client.cli", "Call a running server: embed a folder of images or texts, classify images."),
}


def build_parser(command: str | None) -> argparse.ArgumentParser:
    """The parser; only ``command``'s module is imported to add its flags."""
    from service import __version__

    parser = argparse.ArgumentParser(prog="clipserve", description="A production server for CLIP models.")
    parser.add_argument("--version", action="version", version=f"clipserve {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, summary) in COMMANDS.items():
        sub_parser = sub.add_parser(name, help=summary, description=summary)
        if name == command:
            importlib.import_module(module).add_arguments(sub_parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and run the subcommand; returns the exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in args_list if not a.startswith("-")), None)
    try:
        parser = build_parser(command if command in COMMANDS else None)
    except ModuleNotFoundError as exc:
        print(f"clipserve {command}: not available in this install (no module {exc.name!r}): "
              "pip install 'clipserve[server]'", file=sys.stderr)
        return 2
    args = parser.parse_args(args_list)
    status: int = importlib.import_module(COMMANDS[args.command][0]).run(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
