"""The image and text towers of a loadable model to ONNX, in the model repository.

Each tower becomes one ONNX graph with float32 input/output: ``pixels`` (N, 3, S, S) -> ``embeddings``
(N, D) and ``tokens`` (N, L) int64 -> ``embeddings`` (N, D), L2-normalised. N is dynamic in both and L in
the text tower: CLIP's causal mask makes running only the positions the longest text needs exact, so
the text graph slices its positional embedding and mask to L. The result is written, with a
``config.json`` (backend ``onnx``), to ``<model_dir>/<name>/onnx/{image,text}.onnx`` so that
``clipserve serve --model <name>`` serves it. Options: fp16 (for GPUs; float32 I/O, casts inside),
ORT offline graph optimisation (CPU), int8 dynamic quantisation (CPU).

torch is imported lazily here: the serving path (``service.runtime.onnx_backend``) never needs it.
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from service.clip.model_config import ModelConfig, OnnxFiles, read_config, write_config

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

DEFAULT_OPSET = 18
MIN_OPSET = 17
MAX_BATCH = 4096
VERIFY_TOLERANCE = 1e-4
MAX_INLINE_BYTES = 2**31 - 2**26  # protobuf's 2 GB limit, with room for the graph
IMAGE_FILE = "image.onnx"
TEXT_FILE = "text.onnx"
ONNX_DIR = "onnx"
Precision = Literal["fp32", "fp16", "int8"]


@dataclass(frozen=True)
class ExportOptions:
    """How to export: precision of the graphs, ORT offline optimisation, opset."""

    precision: Precision = "fp32"
    optimize: bool = False
    opset: int = DEFAULT_OPSET


def _towers(model: Any, context_length: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Wrap a model's towers as modules whose outputs are L2-normalised float32 embeddings.

    The text tower mirrors ``service.clip.text.encode_text_trimmed`` with the length taken from the
    input's shape (the caller trims): the graph runs L positions, L dynamic. Models where trimming is
    not exact (``can_trim``) get their input padded to the context length inside the graph.
    """
    import torch
    import torch.nn.functional as F
    from open_clip.transformer import text_global_pool

    from service.clip.text import can_trim

    trim = can_trim(model)

    class ImageTower(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, pixels: torch.Tensor) -> torch.Tensor:
            return F.normalize(self.model.encode_image(pixels).float(), dim=-1)

    class TextTower(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            m = self.model
            if not trim:
                tokens = F.pad(tokens, (0, context_length - tokens.shape[1]))
                return F.normalize(m.encode_text(tokens).float(), dim=-1)
            n = tokens.shape[1]
            x = m.token_embedding(tokens) + m.positional_embedding[:n]
            x = m.transformer(x, attn_mask=m.attn_mask[:n, :n])
            x = text_global_pool(m.ln_final(x), tokens, m.text_pool_type, eos_token_id=getattr(m, "text_eos_id", None))
            proj = m.text_projection
            if proj is not None:
                x = proj(x) if isinstance(proj, torch.nn.Linear) else x @ proj
            return F.normalize(x.float(), dim=-1)

    return ImageTower().eval(), TextTower().eval()


def _export_graph(module: torch.nn.Module, example: torch.Tensor, path: Path, input_name: str,
                  dynamic: dict[int, Any], opset: int) -> None:
    """Export one tower with torch's dynamo exporter and check the graph.

    Not the TorchScript exporter (``dynamo=False``): tracing bakes the batch size and sequence length
    into the reshapes of ``nn.MultiheadAttention`` (it unpacks ``query.shape`` into Python ints), so
    its graphs fail at any other batch size. ``torch.export`` keeps them symbolic.
    """
    import onnx
    import torch

    big = sum(p.numel() * p.element_size() for p in module.parameters()) >= MAX_INLINE_BYTES
    with torch.no_grad():
        torch.onnx.export(
            module, (example,), str(path), dynamo=True, opset_version=opset, verbose=False,
            input_names=[input_name], output_names=["embeddings"],
            dynamic_shapes={input_name: dynamic}, external_data=big,
        )
    onnx.checker.check_model(str(path))


def _verify(module: torch.nn.Module, examples: list[torch.Tensor], path: Path, input_name: str) -> float:
    """Run the float32 graph against torch on a few shapes; raise if they disagree. Returns the max diff."""
    import numpy as np
    import onnxruntime as ort
    import torch

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for example in examples:
        with torch.no_grad():
            expected = module(example).numpy()
        got = session.run(None, {input_name: example.numpy()})[0]
        worst = max(worst, float(np.abs(got - expected).max()))
    if worst > VERIFY_TOLERANCE:
        raise RuntimeError(f"exported {path.name} differs from torch by {worst:.2e} (> {VERIFY_TOLERANCE})")
    return worst


def _to_fp16(path: Path) -> None:
    """Convert a graph's weights and compute to float16 in place, keeping float32 inputs and outputs."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = OnnxModel(convert_float_to_float16(onnx.load(str(path)), keep_io_types=True))
    model.topological_sort()  # the converter appends its input casts after their consumers
    onnx.save(model.model, str(path))
    onnx.checker.check_model(str(path))


def _optimize(path: Path) -> None:
    """ORT offline graph optimisation (extended level: portable across CPUs, unlike level 'all')."""
    import onnxruntime as ort

    tmp = path.with_suffix(".opt.onnx")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp)
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    tmp.replace(path)


def _quantize_int8(path: Path) -> None:
    """Dynamic int8 quantisation of the matrix products (weights int8, activations per batch)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = path.with_suffix(".int8.onnx")
    quantize_dynamic(str(path), str(tmp), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"])
    tmp.replace(path)


def convert(path: Path, options: ExportOptions) -> None:
    """Turn a float32 graph into ``options``' precision (and optimise it) in place."""
    log.info("%s: %s%s", path.name, options.precision, " (optimised)" if options.optimize else "")
    if options.precision == "fp16":
        _to_fp16(path)
    if options.optimize:
        _optimize(path)
    if options.precision == "int8":
        _quantize_int8(path)


def derive(fp32_dir: Path, out_dir: Path, name: str, options: ExportOptions) -> ModelConfig:
    """A variant of an fp32 export (``fp32_dir``) at another precision, without exporting again."""
    source = read_config(fp32_dir)
    if source.onnx is None or source.onnx.precision != "fp32":
        raise ValueError(f"{fp32_dir} is not an fp32 ONNX export")
    shutil.copytree(fp32_dir, out_dir, dirs_exist_ok=True)
    files = source.onnx.model_copy(update={"precision": options.precision})
    for relative in (files.image, files.text):
        convert(out_dir / relative, options)
    config = source.model_copy(update={"name": name, "onnx": files, "path": out_dir})
    write_config(config, out_dir)
    return config


def _image_checks(size: int) -> list[torch.Tensor]:
    """Inputs at batch sizes other than the export's, to catch a baked-in batch size."""
    import torch

    generator = torch.Generator().manual_seed(0)
    return [torch.randn(n, 3, size, size, generator=generator) for n in (1, 3)]


def _token_checks(context_length: int, vocab_size: int) -> list[torch.Tensor]:
    """Token batches of other sizes and lengths, each row ending with the largest id (end of text)."""
    import torch

    generator = torch.Generator().manual_seed(0)
    checks = []
    for n, length in ((1, min(5, context_length)), (3, context_length)):
        tokens = torch.randint(1, vocab_size - 1, (n, length), generator=generator)
        tokens[:, -1] = vocab_size - 1
        checks.append(tokens)
    return checks


def _vocab_size(model: Any) -> int:
    """The text tower's vocabulary: open_clip's CLIP has it on the model, CustomTextCLIP on ``model.text``
    (SigLIP: 32,000 or 256,000; ids beyond it would fail in the embedding)."""
    size = getattr(model, "vocab_size", None) or getattr(getattr(model, "text", None), "vocab_size", None)
    return int(size or 49408)


def export_towers(model: Any, config: ModelConfig, out_dir: Path, options: ExportOptions) -> OnnxFiles:
    """Export both towers of a loaded open_clip model into ``out_dir/onnx``; return their files."""
    import torch

    model = model.float().eval()
    image_tower, text_tower = _towers(model, config.context_length)
    onnx_dir = out_dir / ONNX_DIR
    onnx_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=onnx_dir) as tmp:
        image_tmp, text_tmp = Path(tmp) / IMAGE_FILE, Path(tmp) / TEXT_FILE
        batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
        sequence = torch.export.Dim("sequence", min=1, max=config.context_length)
        pixels = torch.zeros(2, 3, config.image_size, config.image_size)
        _export_graph(image_tower, pixels, image_tmp, "pixels", {0: batch}, options.opset)
        vocab_size = _vocab_size(model)
        tokens = torch.ones(2, config.context_length, dtype=torch.long)
        tokens[:, -1] = vocab_size - 1  # a non-degenerate argmax while exporting
        _export_graph(text_tower, tokens, text_tmp, "tokens", {0: batch, 1: sequence}, options.opset)
        log.info("exported both towers; checking them against torch")
        _verify(image_tower, _image_checks(config.image_size), image_tmp, "pixels")
        _verify(text_tower, _token_checks(config.context_length, vocab_size), text_tmp, "tokens")
        for path in (image_tmp, text_tmp):
            convert(path, options)
            shutil.move(str(path), onnx_dir / path.name)
    return OnnxFiles(image=f"{ONNX_DIR}/{IMAGE_FILE}", text=f"{ONNX_DIR}/{TEXT_FILE}", precision=options.precision)


def onnx_config(config: ModelConfig, files: OnnxFiles, name: str, out_dir: Path) -> ModelConfig:
    """The config of the exported model: same preprocessing, backend ``onnx``, torch still able to load it.

    Exported to another folder, a custom architecture file is copied along and a checkpoint or tokenizer
    folder that was relative to the source folder becomes an absolute path. The config keeps the model's
    scoring, logit scale and bias, and tokenizer (``service.clip.completion``), so ONNX serving needs no torch.
    """
    update: dict[str, Any] = {"name": name, "backend": "onnx", "onnx": files, "path": out_dir}
    if config.path is not None and config.path.resolve() != out_dir.resolve():
        if config.arch_config is not None:
            arch = config.resolve(config.arch_config)
            shutil.copyfile(arch, out_dir / arch.name)
            update["arch_config"] = arch.name
        if config.weights and config.resolve(config.weights).exists():
            update["weights"] = str(config.resolve(config.weights).resolve())
        tokenizer = config.local_tokenizer()
        if tokenizer is not None:
            update["tokenizer"] = str(tokenizer)
    return config.model_copy(update=update)


def default_name(model: str) -> str:
    """A repository name for a model spec: ``ViT-B-32:openai`` -> ``ViT-B-32-openai``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", Path(model).name if "/" in model else model).strip("-")


def _load(config: ModelConfig, cache_dir: Path | None) -> tuple[Any, ModelConfig]:
    """Load the model through the shared loader (fp32, CPU); the exporter traces it."""
    from service.clip.loading import load_clip

    return load_clip(config, "cpu", "fp32", cache_dir)


def export_model(config: ModelConfig, out_dir: Path, name: str, options: ExportOptions,
                 cache_dir: Path | None = None) -> ModelConfig:
    """Load ``config``'s model, export its towers into ``out_dir`` and write ``out_dir/config.json``."""
    model, full = _load(config, cache_dir)
    files = export_towers(model, full, out_dir, options)
    exported = onnx_config(full, files, name, out_dir)
    write_config(exported, out_dir)
    return exported
