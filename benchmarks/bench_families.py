"""Speed against accuracy across model families: REST images/s and texts/s on ONNX Runtime, per model.

    .venv/bin/python benchmarks/bench_families.py [--models MobileCLIP2-S0,MobileCLIP2-S2,ViT-B-32,ViT-B-16-SigLIP2]
        [--concurrency 16 1] [--seconds 20] [--rounds 2] [--cache-dir DIR]
        [--tokenizer ViT-B-16-SigLIP2=/path/to/gemma-tokenizer] [--skip-texts ViT-B-16-SigLIP2]
        [--server-args "ViT-B-16-SigLIP2=--some-flag value"]

Each model is an open_clip architecture with seeded random weights (speed does not depend on the
weights), served alone by ``clipserve serve --model ARCH --backend onnx`` (fp32, CPU provider): the first
start exports it (cached under ``--cache-dir``, default ``~/.cache/clipserve``; the export is not timed).
The load is ``clipserve bench``'s (``service.measure.serving``): one item per request, closed loops of
``--concurrency`` clients over HTTP/1.1 keep-alive, the 125 shared photos and CLIP-style prompts;
configurations alternate for ``--rounds`` rounds. The table puts each model's published ImageNet
zero-shot top-1 beside its speed (``PUBLISHED``, with its source), so a user can pick speed against accuracy.

SigLIP models tokenise with their own Hugging Face tokenizer (SigLIP 2: Gemma's, from the hub), which
cannot be downloaded offline. For a model whose open_clip config names one (``hf_tokenizer_name``) the
script builds a STAND-IN unless ``--tokenizer MODEL=FOLDER`` gives the real files: a small Unigram
tokenizer (library ``tokenizers``) trained on the benchmark's CLIP prompts, saved in the Hugging Face
format, and a model repository entry ``models/MODEL/config.json`` (``name``, ``architecture``,
``"tokenizer": "tokenizer"``; no weights: seeded random) under ``<cache root>/bench_families`` (the
``--cache-dir`` or ``~/.cache/clipserve``), served with ``--model-dir <that>/models --model MODEL``.
The stand-in's token ids differ from Gemma's, but the text tower's work does not: SigLIP's rows are
always the full 64-token context (no causal mask, no trimming to the longest text), so texts/s
measures the tower (tokenizing, a small share of a request's time, runs on the same ``tokenizers``
library as Gemma's files would). The table's note says so. The stand-in lives
in a fixed folder, not a temporary one, because the ONNX export cached on the first start keys on
the entry and records the tokenizer folder's path: later runs reuse that export.

``--server-args MODEL=FLAGS`` adds serve flags for one model (given last, they win); ``--skip-texts
MODEL`` measures images only and says so in the table, and a model whose text requests fail is
reported the same way. A model whose server does not start is skipped with the reason.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import shlex
import shutil
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
    "MobileCLIP2-S0": ("71.5", "apple/ml-mobileclip README, checkpoint table (MobileCLIP2-S0)"),
    "MobileCLIP2-S2": ("77.2", "apple/ml-mobileclip README, checkpoint table (MobileCLIP2-S2)"),
    "ViT-B-32": ("63.3", "open_clip docs/openclip_results.csv, ViT-B-32 openai (the CLIP paper reports 63.2)"),
    "ViT-B-16-SigLIP2": ("78.2", "google-research/big_vision README_siglip2.md, B/16 at 224 px (webli)"),
}
STAND_IN_NOTE = ("texts: stand-in Unigram tokenizer, not Gemma's; the tower's work is the same "
                 "(full 64-token rows, no trimming), so texts/s measures it")


def hf_tokenizer_of(model: str) -> str | None:
    """The Hugging Face tokenizer open_clip's config of ``model`` names (SigLIP's), else None."""
    import open_clip

    from service.clip.completion import text_family

    config = open_clip.get_model_config(model.partition(":")[0]) or {}
    tokenizer: str | None = text_family(config).get("tokenizer")
    return tokenizer


def train_stand_in(folder: Path, texts: list[str], vocab_size: int = 2000) -> Path:
    """A SentencePiece-like Unigram tokenizer trained on ``texts``, saved into ``folder`` as transformers
    saves a fast tokenizer (tokenizer.json, tokenizer_config.json, special_tokens_map.json).

    Framed as Gemma frames a text (``<bos> ... <eos>``, pad id 0), trained on the texts as the server
    cleans them for SigLIP (``canonicalize``). Its ids are not Gemma's: only the tower's input shape is.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    from service.clip.hf_tokenizer import CLEANERS

    specials = {"pad_token": "<pad>", "eos_token": "<eos>", "bos_token": "<bos>", "unk_token": "<unk>"}
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=list(specials.values()),
                                      unk_token="<unk>", show_progress=False)
    tok.train_from_iterator([CLEANERS["canonicalize"](text) for text in texts], trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", pair="<bos> $A <eos> $B <eos>",
        special_tokens=[(t, tok.token_to_id(t)) for t in ("<bos>", "<eos>")])
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "special_tokens_map.json").write_text(json.dumps(specials, indent=2))
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "PreTrainedTokenizerFast", **specials}, indent=2))
    return folder


def tokenizer_entry(model: str, args: argparse.Namespace, texts: list[str]) -> tuple[Path | None, str]:
    """The model directory to serve ``model`` from, and the table's note: a repository entry naming a
    tokenizer folder for a model whose open_clip config names a Hugging Face tokenizer; (None, "") else.

    The folder is ``--tokenizer MODEL=FOLDER``'s, else a stand-in trained here. The entry lives in a fixed
    folder under the cache root so that later runs reuse the ONNX export cached on the first start.
    """
    if hf_tokenizer_of(model) is None:
        return None, ""
    from service.config import Settings
    from service.runtime.onnx_cache import cache_root

    models_dir = cache_root(Settings(cache_dir=args.cache_dir)) / "bench_families" / "models"
    entry = models_dir / model
    arch, _, weights = model.partition(":")
    entry.mkdir(parents=True, exist_ok=True)
    config: dict[str, str] = {"name": model, "architecture": arch, **({"weights": weights} if weights else {})}
    if model in args.tokenizers:
        config["tokenizer"], note = str(Path(args.tokenizers[model]).resolve()), ""
    else:
        shutil.rmtree(entry / "tokenizer", ignore_errors=True)
        train_stand_in(entry / "tokenizer", texts)
        config["tokenizer"], note = "tokenizer", STAND_IN_NOTE  # relative to the entry: the export key stays put
    (entry / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return models_dir, note


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
            out[f"{modality} c={conc}"] = functools.partial(run, modality, reqs, conc)
    return out


def measure_model(model: str, args: argparse.Namespace, photos: list[bytes], texts: list[str]) -> str:
    """Start the model's server, measure it, stop it; one markdown row."""
    port = free_port()
    model_dir, tokenizer_note = tokenizer_entry(model, args, texts)
    flags = ["--model", model, "--backend", "onnx"]
    if model_dir is not None:
        flags += ["--model-dir", str(model_dir)]
    if args.cache_dir:
        flags += ["--cache-dir", str(args.cache_dir)]
    flags += shlex.split(args.extra.get(model, ""))  # last: they win
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
    if "text" in bodies:
        note = tokenizer_note
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
    return f"| {model} | {' | '.join(cells)} | {top1} | {'; '.join(filter(None, (source, note)))} |"


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
                        help="more clipserve serve flags for one model (given last, they win)")
    parser.add_argument("--tokenizer", action="append", default=[], metavar="MODEL=FOLDER",
                        help="Hugging Face tokenizer files for a SigLIP model (default: a stand-in trained here)")
    parser.add_argument("--skip-texts", action="append", default=[], metavar="MODEL", help="measure images only")
    args = parser.parse_args()
    args.extra = dict(item.split("=", 1) for item in args.server_args)
    args.tokenizers = dict(item.split("=", 1) for item in args.tokenizer)
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
