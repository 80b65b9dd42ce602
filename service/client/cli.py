"""``clipserve client``: call a running server from the command line.

- ``clipserve client embed FOLDER --out emb.npy`` embeds every image under FOLDER (ids: paths
  relative to it); ``clipserve client embed --texts lines.txt --out emb.parquet`` embeds each
  non-blank line (ids: 1-based line numbers). ``--out`` ends in .npy (+ ``.ids.txt``), .npz or .parquet.
- ``clipserve client classify IMAGES... --labels cat,dog,car`` (or ``--label-set cifar10``) prints
  each image's best labels as a table; an image may be an http(s) URL, which the server fetches.

``--url`` picks the server and protocol (``http://``, ``grpc://``, ``grpcs://``; default
``$CLIPSERVE_URL`` or http://127.0.0.1:8000); ``--api-key`` defaults to ``$CLIPSERVE_API_KEY``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from service.client.chunks import ImageSource
from service.client.connect import DEFAULT_URL
from service.client.errors import RequestFailed
from service.client.output import FORMATS, require_pyarrow, write_embeddings
from service.client.sync import ClipClient
from service.client.types import LabelScore
from service.protocol.image_url import is_http_url

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=os.environ.get("CLIPSERVE_URL", DEFAULT_URL),
                        help="http://HOST:PORT (REST), grpc://HOST:PORT or grpcs://HOST:PORT (default: %(default)s)")
    common.add_argument("--api-key", default=os.environ.get("CLIPSERVE_API_KEY"), help="sent as x-api-key")
    common.add_argument("--cacert", type=Path, help="PEM root certificates for grpcs://")
    common.add_argument("--model", help="model id (default: the server's default)")
    common.add_argument("--timeout", type=float, default=60.0, help="seconds per call (default: %(default)s)")
    common.add_argument("--chunk-size", type=int, default=64, help="items per call (default: %(default)s)")
    common.add_argument("--concurrency", type=int, default=4, help="calls in flight (default: %(default)s)")
    common.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="progress bar (default: for jobs over 1,000 items)")
    return common


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``embed`` and ``classify`` subcommands to ``parser``."""
    common = _common()
    sub = parser.add_subparsers(dest="client_command", required=True, metavar="ACTION")
    embed = sub.add_parser("embed", parents=[common], help="embed a folder of images or a file of texts",
                           description="Embed a folder of images or the lines of a text file into a file.")
    source = embed.add_mutually_exclusive_group(required=True)
    source.add_argument("folder", nargs="?", type=Path, help="folder of images (searched recursively)")
    source.add_argument("--texts", type=Path, help="text file: one text per line (blank lines skipped)")
    embed.add_argument("--out", type=Path, required=True, help=f"output file: {', '.join(FORMATS)}")
    classify = sub.add_parser("classify", parents=[common], help="zero-shot labels for images, as a table",
                              description="Print the best zero-shot labels of each image.")
    classify.add_argument("images", nargs="+", help="image files or folders, or http(s) URLs (fetched by the server)")
    labels = classify.add_mutually_exclusive_group(required=True)
    labels.add_argument("--labels", help="comma-separated labels: cat,dog,car")
    labels.add_argument("--label-set", help="a server label set: imagenet, cifar10, cifar100")
    classify.add_argument("--template", action="append", dest="templates",
                          help="prompt template with {} (repeatable; default: the server's)")
    classify.add_argument("--top-k", type=int, default=5, help="labels per image (default: %(default)s)")


def image_files(paths: Sequence[Path]) -> list[tuple[str, Path]]:
    """(id, file) for image files given directly or found under folders; folder ids are relative paths."""
    out: list[tuple[str, Path]] = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            out += [(p.relative_to(path).as_posix(), p) for p in found]
        elif path.is_file():
            out.append((path.name, path))
        else:
            raise FileNotFoundError(f"no such file or folder: {path}")
    return out


def text_lines(path: Path) -> list[tuple[str, str]]:
    """(line number, text) for each non-blank line of a UTF-8 file."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [(str(n), line) for n, line in enumerate(lines, start=1) if line.strip()]


def _client(args: argparse.Namespace) -> ClipClient:
    roots = args.cacert.read_bytes() if args.cacert else None
    return ClipClient(args.url, api_key=args.api_key, root_certificates=roots, timeout_s=args.timeout,
                      chunk_size=args.chunk_size, concurrency=args.concurrency, progress=args.progress)


def _embed(args: argparse.Namespace, client: ClipClient) -> int:
    if args.out.suffix.lower() not in FORMATS:
        raise ValueError(f"--out must end in one of {', '.join(FORMATS)}, got {args.out.name!r}")
    if args.out.suffix.lower() == ".parquet":
        require_pyarrow()  # before the work: "Parquet output needs pyarrow: pip install 'clipserve[parquet]'"
    if args.texts is not None:
        texts = text_lines(args.texts)
        if not texts:
            raise ValueError(f"no texts in {args.texts}")
        ids = [item_id for item_id, _ in texts]
        rows = client.embed_texts([text for _, text in texts], model=args.model)
        kind = "texts"
    else:
        files = image_files([args.folder])
        if not files:
            raise ValueError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {args.folder}")
        ids = [item_id for item_id, _ in files]
        rows = client.embed_images([path for _, path in files], model=args.model)
        kind = "images"
    written = write_embeddings(args.out, ids, rows)
    print(f"embedded {len(ids)} {kind} ({rows.shape[1]} dimensions) -> {', '.join(map(str, written))}")
    return 0


def format_table(names: Sequence[str], ranked: Sequence[Sequence[LabelScore]]) -> str:
    """One row per image: its name, then each label with its score, best first, in aligned columns."""
    k = max((len(r) for r in ranked), default=0)
    header = ["image", *(f"#{i + 1}" for i in range(k))]
    rows = [[name, *(f"{s.label} ({s.score:.3f})" for s in labels)] for name, labels in zip(names, ranked, strict=True)]
    widths = [max(len(row[c]) if c < len(row) else 0 for row in [header, *rows]) for c in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)).rstrip() for row in [header, *rows]]
    return "\n".join(lines)


def _classify(args: argparse.Namespace, client: ClipClient) -> int:
    pairs: list[tuple[str, ImageSource]] = []
    for source in args.images:  # a URL goes as such: the server fetches it
        pairs += [(source, source)] if is_http_url(source) else image_files([Path(source)])
    if not pairs:
        raise ValueError("no images found")
    labels = [x.strip() for x in args.labels.split(",") if x.strip()] if args.labels else None
    ranked = client.classify([path for _, path in pairs], labels, label_set=args.label_set,
                             templates=args.templates, top_k=args.top_k, model=args.model)
    print(format_table([item_id for item_id, _ in pairs], ranked))
    return 0


def run(args: argparse.Namespace) -> int:
    """Run ``clipserve client ACTION``; 0 on success, 1 when the server refused, 2 for bad arguments."""
    try:
        with _client(args) as client:
            return _embed(args, client) if args.client_command == "embed" else _classify(args, client)
    except RequestFailed as error:
        print(f"clipserve client {args.client_command}: the server said {error}", file=sys.stderr)
        return 1
    except (ValueError, OSError) as error:
        print(f"clipserve client {args.client_command}: {error}", file=sys.stderr)
        return 2
