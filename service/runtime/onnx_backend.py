"""The ONNX Runtime backend: a model exported by ``clipserve export`` behind ``Backend``.

numpy and onnxruntime only: nothing on this module's import path imports torch, so a slim install
serves exported models. Execution providers come from configuration (``onnx_providers``, in order
of preference; empty: CUDA then CPU on a ``cuda`` device, CPU otherwise); a requested provider that
this onnxruntime build lacks, or that fails to start, is dropped with a warning and the providers
actually in use are reported in ``ModelInfo.providers``; sessions that cannot start at all raise
``StartupError`` naming ``onnx_providers`` (an operator's problem, not a client's). With the CUDA or
TensorRT provider the inputs and outputs go through IO binding.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from service.clip.loading import fingerprint
from service.clip.model_config import ModelConfig, OnnxFiles
from service.config import Settings
from service.errors import NotFound, StartupError
from service.protocol.model_info import ModelInfo
from service.runtime.base import check_pixels, check_tokens

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
GPU_PROVIDERS = (TENSORRT, CUDA)
GRAPH_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


@dataclass(frozen=True)
class SessionConfig:
    """How to run the sessions: providers, device, threads, graph optimisation, memory arena."""

    providers: tuple[str, ...] = ()  # in order of preference; empty: best available for the device
    device: str = "cpu"  # cpu, cuda or cuda:N
    threads: int = 0  # intra-op threads (0: onnxruntime's default)
    graph_optimization: str = "all"
    memory_arena: bool = True
    max_batch_size: int = 32  # the largest batch TensorRT's shape profile plans for
    cache_dir: Path | None = None  # TensorRT engine cache (default: the model's onnx folder)
    io_binding: bool | None = None  # None: on with a GPU provider

    @property
    def device_id(self) -> int:
        """The GPU index of a ``cuda:N`` device (0 for ``cuda`` and ``cpu``)."""
        return int(self.device.partition(":")[2] or 0)


def choose_providers(requested: Sequence[str], device: str, available: Sequence[str]) -> tuple[list[str], list[str]]:
    """The providers to ask onnxruntime for, in order, and the requested ones it lacks.

    Empty ``requested``: CUDA then CPU on a ``cuda`` device, CPU otherwise (TensorRT only on request:
    its engines take minutes to build). The CPU provider always closes the list as the last fallback.
    """
    wanted = list(requested) or ([CUDA, CPU] if device.startswith("cuda") else [CPU])
    chosen = [p for p in wanted if p in available]
    missing = [p for p in wanted if p not in available]
    if CPU not in chosen:
        chosen.append(CPU)
    return chosen, missing


def _preload_cuda() -> None:
    """Load CUDA and cuDNN from the nvidia-* wheels (``onnxruntime-gpu[cuda,cudnn]``), torch or not."""
    preload = getattr(ort, "preload_dlls", None)  # onnxruntime >= 1.21
    if preload is None:
        return
    try:
        preload()
    except Exception as exc:  # the system's libraries may still do
        log.warning("onnxruntime.preload_dlls failed (%s); relying on the system's CUDA libraries", exc)


def model_files(config: ModelConfig) -> tuple[OnnxFiles, Path, Path]:
    """The model's ONNX files; NotFound, naming the export command, where they are missing."""
    files = config.onnx or OnnxFiles()
    image, text = config.resolve(files.image), config.resolve(files.text)
    missing = [str(p) for p in (image, text) if not p.is_file()]
    if missing:
        raise NotFound(
            f"model {config.name!r} has no ONNX export (missing {', '.join(missing)}): run "
            f"`clipserve export --model {config.name}` first, or serve it with --backend torch"
        )
    return files, image, text


class OnnxBackend:
    """Two ONNX Runtime sessions (image and text towers) that embed preprocessed batches."""

    def __init__(self, config: ModelConfig, options: SessionConfig | None = None) -> None:
        """Open the sessions of ``config``'s exported towers with ``options``."""
        self.config = config
        self.options = options or SessionConfig()
        files, image_path, text_path = model_files(config)
        if config.logit_scale is None:
            raise NotFound(f"model {config.name!r}: config.json lacks logit_scale; export the model again")
        requested, missing = choose_providers(self.options.providers, self.options.device,
                                              ort.get_available_providers())
        for name in missing:
            log.warning("model %s: onnxruntime provider %s is not available here; skipping it", config.name, name)
        if any(p in GPU_PROVIDERS for p in requested):
            _preload_cuda()
        size = config.image_size
        self._sessions = {
            "pixels": self._session(image_path, requested, files.precision, "pixels", (3, size, size)),
            "tokens": self._session(text_path, requested, files.precision, "tokens", (config.context_length,)),
        }
        used = tuple(self._sessions["pixels"].get_providers())
        fallen = [p for p in requested if p not in used]
        if fallen:
            log.warning("model %s: providers %s failed to start; running on %s", config.name, fallen, list(used))
        on_gpu = used[0] in GPU_PROVIDERS
        self._binding = self.options.io_binding if self.options.io_binding is not None else on_gpu
        self._bind_device = "cuda" if on_gpu else "cpu"
        self.info = self._info(files, used, missing + fallen, (image_path, text_path))
        log.info("loaded %s (onnx %s) on %s with %s", config.name, files.precision, self.info.device, list(used))

    @classmethod
    def from_settings(cls, config: ModelConfig, settings: Settings, device: str = "cpu") -> OnnxBackend:
        """A backend configured by the server settings (``create_backend``'s entry point)."""
        providers = tuple(p.strip() for p in settings.onnx_providers.split(",") if p.strip())
        exported = (config.onnx or OnnxFiles()).precision
        if settings.precision and settings.precision != exported:
            log.warning("model %s: the ONNX graphs are %s (fixed at export); --precision %s does not apply: "
                        "`clipserve export --precision` makes other graphs", config.name, exported, settings.precision)
        options = SessionConfig(
            providers=providers, device=device, threads=settings.inference_threads,
            graph_optimization=settings.onnx_graph_optimization, memory_arena=settings.onnx_memory_arena,
            max_batch_size=settings.max_batch_size, cache_dir=settings.cache_dir,
        )
        return cls(config, options)

    def _session(self, path: Path, providers: list[str], precision: str, input_name: str,
                 shape: tuple[int, ...]) -> ort.InferenceSession:
        opts = ort.SessionOptions()
        level = self.options.graph_optimization
        if precision == "fp16" and level == "all":
            # onnxruntime 1.32's CPU layout passes (level "all") crash on fp16 graphs, and a GPU
            # provider that fails to start falls back to the CPU; "extended" is all a GPU uses anyway.
            level = "extended"
        opts.graph_optimization_level = GRAPH_LEVELS[level]
        opts.enable_cpu_mem_arena = self.options.memory_arena
        opts.log_severity_level = 3  # errors only; fallbacks are reported here instead
        if self.options.threads > 0:
            opts.intra_op_num_threads = self.options.threads
            opts.inter_op_num_threads = 1
        with_options = [(p, self._provider_options(p, precision, input_name, shape, path)) for p in providers]
        try:
            return ort.InferenceSession(str(path), opts, providers=with_options)
        except Exception as exc:  # e.g. fp16 kernels missing on the CPU provider, a damaged file
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            asked = ",".join(self.options.providers) or "default"
            raise StartupError(
                f"model {self.config.name!r}: onnxruntime cannot start {path.name} ({precision}) on {providers}: "
                f"{reason}. Check onnx_providers (--onnx-providers / CLIPSERVE_ONNX_PROVIDERS, now {asked}): "
                f"fp16 exports need a GPU provider where the CPU lacks their kernels; export fp32 or int8 for "
                f"CPUs, or export again (`clipserve export --model {self.config.name}`) if the file is damaged.",
                setting="onnx_providers",
            ) from exc

    def _provider_options(self, provider: str, precision: str, input_name: str, shape: tuple[int, ...],
                          path: Path) -> dict[str, Any]:
        if provider == CUDA:  # fp32 means fp32: no TF32 matrix products (on by default in the CUDA provider)
            return {"device_id": self.options.device_id, "use_tf32": int(precision != "fp32")}
        if provider != TENSORRT:
            return {}
        dims = "x".join(str(d) for d in shape)
        cache = self.options.cache_dir / "tensorrt" if self.options.cache_dir else path.parent / "tensorrt"
        return {
            "device_id": self.options.device_id,
            "trt_fp16_enable": precision == "fp16",
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(cache),
            "trt_timing_cache_enable": True,
            "trt_timing_cache_path": str(cache),
            # one profile for every batch size (and text length) served: no engine rebuild per shape
            "trt_profile_min_shapes": f"{input_name}:1x{'1' if len(shape) == 1 else dims}",
            "trt_profile_opt_shapes": f"{input_name}:{self.options.max_batch_size}x{dims}",
            "trt_profile_max_shapes": f"{input_name}:{self.options.max_batch_size}x{dims}",
        }

    def _info(self, files: OnnxFiles, used: tuple[str, ...], dropped: list[str],
              paths: tuple[Path, Path]) -> ModelInfo:
        config = self.config
        dimension = config.embed_dim or int(self._sessions["pixels"].get_outputs()[0].shape[1])
        parts = "".join(fingerprint(config, p) for p in paths)
        assert config.logit_scale is not None
        return ModelInfo(
            name=config.name,
            dimension=dimension,
            image_size=config.image_size,
            context_length=config.context_length,
            logit_scale=config.logit_scale,
            backend="onnx",
            precision=files.precision,
            device=self.options.device if used[0] in GPU_PROVIDERS else "cpu",
            providers=used,
            fingerprint=hashlib.sha256(parts.encode()).hexdigest()[:16],
            extra={
                "architecture": config.architecture,
                "onnxruntime": ort.__version__,
                "providers_requested": ",".join(self.options.providers) or "default",
                "providers_unavailable": ",".join(dropped) or "none",
                "graph_optimization": self.options.graph_optimization,
                "io_binding": "on" if self._binding else "off",
            },
            scoring=config.scoring,
            logit_bias=config.logit_bias,
        )

    def _run(self, name: str, batch: np.ndarray) -> np.ndarray:
        """One session run; on a GPU provider through IO binding (output allocated on the device)."""
        session = self._sessions[name]
        if not self._binding:
            out: np.ndarray = session.run(None, {name: batch})[0]
            return out
        binding = session.io_binding()
        binding.bind_cpu_input(name, batch)
        binding.bind_output(session.get_outputs()[0].name, self._bind_device, self.options.device_id)
        session.run_with_iobinding(binding)
        result: np.ndarray = binding.copy_outputs_to_cpu()[0]
        return result

    def encode_images(self, pixels: np.ndarray) -> np.ndarray:
        """(N, 3, S, S) float32 normalised pixels -> (N, D) float32, L2-normalised rows."""
        pixels = check_pixels(pixels, self.info.image_size)
        if pixels.shape[0] == 0:
            return np.zeros((0, self.info.dimension), dtype=np.float32)
        return self._run("pixels", pixels)

    def encode_texts(self, tokens: np.ndarray) -> np.ndarray:
        """(N, L) int64 zero-padded token ids, L <= context length -> (N, D) float32, L2-normalised.

        Columns after the longest text are dropped first: the graph runs only the positions needed.
        """
        tokens = check_tokens(tokens, self.info.context_length)
        if tokens.shape[0] == 0:
            return np.zeros((0, self.info.dimension), dtype=np.float32)
        used = np.flatnonzero((tokens != 0).any(axis=0))
        length = int(used[-1]) + 1 if used.size else 1
        return self._run("tokens", np.ascontiguousarray(tokens[:, :length]))

    def warmup(self, batch_sizes: Sequence[int]) -> None:
        """Run both towers once per batch size (texts at the full context length, the worst case)."""
        size, context = self.info.image_size, self.info.context_length
        for n in batch_sizes:
            self.encode_images(np.zeros((n, 3, size, size), dtype=np.float32))
            tokens = np.ones((n, context), dtype=np.int64)
            tokens[:, -1] = 2  # a largest id ends each row, where argmax pooling reads
            self.encode_texts(tokens)

    def close(self) -> None:
        """Release the sessions (and their device memory)."""
        self._sessions.clear()
