"""Load a CLIP model from any source clipserve accepts, and complete its ``ModelConfig``.

Sources (``ModelConfig.weights``, resolved relative to the model folder):

- ``None``: random weights, seeded by ``config.seed`` (tests and benchmarks). The same seed gives the
  same weights as ``torch.manual_seed(seed); open_clip.create_model(arch)``.
- an open_clip pretrained tag (``ViT-B-32:openai``): downloaded by open_clip into ``cache_dir``.
- a local checkpoint file: an open_clip state dict (``.pt``/``.bin``/``.pth``/``.safetensors``,
  possibly under ``"state_dict"`` and ``module.``-prefixed, fp16 upcast to fp32) or an OpenAI
  TorchScript archive. With architecture ``openai`` the architecture is inferred from an OpenAI
  checkpoint (QuickGELU, as OpenAI trained), otherwise it is the open_clip ``architecture`` (or the
  custom ``arch_config`` JSON of a model repository entry).
- ``hf:<dir>`` (or architecture ``hf``): a Hugging Face ``CLIPModel`` directory, see ``hf_clip``, or a
  ``SiglipModel`` / ``Siglip2Model`` one, see ``hf_siglip``.

torch and open_clip are imported inside the functions, so importing this module (for ``fingerprint``
of a weight file, say) does not need them.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import socket
import urllib.parse
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from service.clip.completion import complete_config, text_family
from service.clip.model_config import ModelConfig
from service.clip.reparam import reparameterize
from service.errors import NotFound

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

OPENAI_ARCH = "openai"  # architecture inferred from an OpenAI-layout checkpoint
HF_ARCH = "hf"
HF_PREFIX = "hf:"
FINGERPRINT_CHARS = 16
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")
HUB_PROBE_S = 3.0  # how long start-up waits to learn whether the Hugging Face Hub can be reached
# Not weights: OpenAI's TorchScript archives carry these ints; a scripted model also saves the causal mask.
_NON_WEIGHT_KEYS = ("input_resolution", "context_length", "vocab_size", "attn_mask")
_PREPROCESS_FIELDS = {"image_size", "mean", "std", "interpolation", "resize_mode", "context_length"}


@dataclass
class WeightSource:
    """Where a model's weights come from, and the preprocessing that ships with them."""

    kind: str  # "random" | "file" | "hf"
    path: Path | None = None
    preprocess: dict[str, Any] = field(default_factory=dict)  # open_clip preprocess_cfg keys
    quick_gelu: bool = False


def load_clip(
    config: ModelConfig, device: str = "cpu", precision: str | None = None, cache_dir: Path | str | None = None
) -> tuple[Any, ModelConfig]:
    """Load ``config``'s model for inference and return it with the completed config.

    The returned open_clip model is re-parameterised where it can be (``reparam``: MobileCLIP), in eval
    mode, without gradients, on ``device`` in ``precision`` (default ``config.precision``; half precisions
    fall back to fp32 on CPU). The config gains the model's image size, context length, preprocessing
    (unless the config set them), embedding size, ``exp(logit_scale)``, scoring (and bias) and tokenizer
    (``service.clip.completion``).
    """
    source = resolve_weights(config, cache_dir)
    if source.kind == "hf":
        from service.clip.hf_siglip import read_hf_folder

        assert source.path is not None
        hf = read_hf_folder(source.path)
        model = hf.build() if hf.build else build_model(hf.model_cfg, quick_gelu=hf.quick_gelu)
        model.load_state_dict(hf.state_dict, strict=True)
        preprocess, family = hf.preprocess, hf.family
    else:
        model_cfg, preprocess = arch_config(config)
        model = build_model(model_cfg, quick_gelu=source.quick_gelu, seed=config.seed)
        if source.path is not None:
            model = _load_checkpoint(config, model, source.path)
        preprocess = {**preprocess, **source.preprocess}
        family = text_family(model_cfg)
    reparameterize(model)
    chosen = resolve_precision(precision or config.precision, device)
    completed = complete_config(config, model, preprocess, chosen, family)
    return to_inference(model, device, chosen), completed


def resolve_weights(config: ModelConfig, cache_dir: Path | str | None = None) -> WeightSource:
    """Decide what ``config.weights`` names: nothing (random), a local file, an HF folder or a tag."""
    weights = config.weights
    if weights is None:
        return WeightSource("random")
    if weights.startswith(HF_PREFIX) or config.architecture == HF_ARCH:
        folder = config.resolve(weights.removeprefix(HF_PREFIX))
        if not (folder / "config.json").is_file():
            raise NotFound(f"model {config.name!r}: no Hugging Face CLIP folder (config.json) at {folder}")
        return WeightSource("hf", folder)
    path = config.resolve(weights)
    if path.is_file():
        return WeightSource("file", path)
    if "/" in weights or path.suffix in CHECKPOINT_SUFFIXES:
        raise _model_error(config, f"checkpoint file {path} does not exist")
    return _pretrained_tag(config, weights, cache_dir)


def _model_error(config: ModelConfig, message: str) -> Exception:
    """A start-up error naming the model as the operator wrote it (``--model NAME: message``)."""
    from service.config import SettingError

    return SettingError("model", message, value=config.name)


def _load_checkpoint(config: ModelConfig, model: Any, path: Path) -> Any:
    """``load_weights``; a file that is no checkpoint (or not of this architecture) is one line naming it."""
    try:
        return load_weights(model, path, infer_openai=config.architecture == OPENAI_ARCH)
    except Exception as exc:
        mismatch = _architecture_mismatch(model, path) if model is not None else None
        if mismatch:
            raise _model_error(config, f"checkpoint file {path} is not a {config.architecture} checkpoint "
                                       f"({mismatch})") from exc
        detail = (str(exc).strip().splitlines() or [""])[0][:200]
        raise _model_error(
            config, f"checkpoint file {path} cannot be loaded ({type(exc).__name__}: {detail})"
        ) from exc


def _architecture_mismatch(model: Any, path: Path) -> str | None:
    """How a checkpoint's tensors differ from the model's (read only after loading failed), or None."""
    try:
        theirs = read_state_dict(path)
    except Exception:
        return None  # not a checkpoint at all: the loader's own error says so
    ours = model.state_dict()
    shapes = [k for k in ours.keys() & theirs.keys() if tuple(ours[k].shape) != tuple(theirs[k].shape)]
    missing = sorted(ours.keys() - theirs.keys())
    if not shapes and not missing:
        return None
    parts = [f"{len(missing)} of the model's {len(ours)} tensors missing"] if missing else []
    if shapes:
        key = sorted(shapes)[0]
        parts.append(f"{len(shapes)} of other shapes, e.g. {key} {tuple(theirs[key].shape)} "
                     f"where the model has {tuple(ours[key].shape)}")
    return "; ".join(parts)


def _pretrained_tag(config: ModelConfig, tag: str, cache_dir: Path | str | None) -> WeightSource:
    """An open_clip pretrained tag: download (or find in the cache) its checkpoint."""
    import open_clip

    pcfg = open_clip.get_pretrained_cfg(config.architecture, tag)
    if not pcfg:
        known = open_clip.list_pretrained_tags_by_model(config.architecture)
        raise NotFound(
            f"model {config.name!r}: weights {tag!r} are neither a file nor an open_clip pretrained tag "
            f"of {config.architecture!r} (known tags: {', '.join(known) or 'none'})"
        )
    online = not pcfg.get("hf_hub") or hub_reachable()
    try:
        with _hub_offline(not online):  # offline: the cache only, no retries against an unreachable hub
            path = open_clip.download_pretrained(pcfg, cache_dir=str(cache_dir) if cache_dir else None)
    except (OSError, RuntimeError, ValueError) as exc:
        if online:
            raise _model_error(config, f"downloading the weights failed: {str(exc).splitlines()[0]}") from exc
        raise _model_error(config, _offline_message(config, cache_dir)) from exc
    if not path:
        raise NotFound(f"model {config.name!r}: open_clip has no download for {config.architecture}:{tag}")
    preprocess = {k: pcfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in pcfg}
    return WeightSource("file", Path(path), preprocess, quick_gelu=bool(pcfg.get("quick_gelu", False)))


def hub_reachable(timeout_s: float = HUB_PROBE_S) -> bool:
    """False when HF_HUB_OFFLINE is set or the Hugging Face Hub's host does not accept a TCP connection
    within ``timeout_s`` (then a download would only retry for a minute before failing)."""
    from huggingface_hub import constants

    if constants.is_offline_mode():
        return False
    endpoint = urllib.parse.urlsplit(constants.ENDPOINT)
    try:
        port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
        socket.create_connection((endpoint.hostname or "", port), timeout=timeout_s).close()
    except (OSError, ValueError):
        return False
    return True


@contextlib.contextmanager
def _hub_offline(offline: bool) -> Iterator[None]:
    """Hugging Face Hub's offline mode while the block runs (the cache only), when ``offline``; the hub's
    log lines through the process's logging only."""
    from huggingface_hub import constants

    hub_log = logging.getLogger("huggingface_hub")
    if logging.getLogger().handlers:  # ours: without the hub's own stderr handler, each line shows once
        hub_log.handlers.clear()
    saved = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = saved or offline
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved


def _offline_message(config: ModelConfig, cache_dir: Path | str | None) -> str:
    cache = cache_dir or "~/.cache/huggingface"
    return (f"the weights are not in the cache ({cache}) and the Hugging Face Hub cannot be reached (offline). "
            f"Fetch them once while online (clipserve export or serve, with the same --cache-dir) or give a "
            f"local checkpoint: --model {config.architecture}:/path/to/checkpoint")


def arch_config(config: ModelConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """The open_clip model config (and any preprocessing it carries) for ``config``.

    A repository entry's ``arch_config`` JSON is either a bare open_clip model config or open_clip's
    ``open_clip_config.json`` layout (``{"model_cfg": ..., "preprocess_cfg": ...}``).
    """
    if config.arch_config is not None:
        path = config.resolve(config.arch_config)
        if not path.is_file():
            raise NotFound(f"model {config.name!r}: architecture file {path} not found")
        data = json.loads(path.read_text())
        return dict(data.get("model_cfg", data)), dict(data.get("preprocess_cfg", {}))
    if config.architecture == OPENAI_ARCH:
        if config.weights is None:
            raise NotFound(f"model {config.name!r}: architecture 'openai' is read off a checkpoint; give one")
        return {}, {}  # inferred from the checkpoint in load_weights
    import open_clip

    model_cfg = open_clip.get_model_config(config.architecture)
    if model_cfg is None:
        raise NotFound(
            f"model {config.name!r}: unknown open_clip architecture {config.architecture!r} "
            "(see open_clip.list_models())"
        )
    return model_cfg, {}


def build_model(model_cfg: dict[str, Any], quick_gelu: bool = False, seed: int = 0) -> Any:
    """Build an open_clip CLIP (or CustomTextCLIP) from its config, with weights seeded by ``seed``.

    Consumes the random stream exactly as ``open_clip.create_model`` does. An empty config (the
    ``openai`` architecture) returns None: the checkpoint defines the model.
    """
    if not model_cfg:
        return None
    import open_clip
    import torch

    cfg = copy.deepcopy(model_cfg)
    text_cfg, vision_cfg = cfg.setdefault("text_cfg", {}), cfg.setdefault("vision_cfg", {})
    if "multimodal_cfg" in cfg:
        raise ValueError("CoCa models (multimodal_cfg) are not supported")
    custom_text = bool(cfg.pop("custom_text", False)) or "hf_model_name" in text_cfg
    text_cfg["hf_model_pretrained"] = False  # never download base tower weights
    if "timm_model_name" in vision_cfg:
        vision_cfg["timm_model_pretrained"] = False
    if not custom_text:
        text_cfg.pop("hf_model_pretrained")
    if quick_gelu:
        cfg["quick_gelu"] = True
    model_class = open_clip.CustomTextCLIP if custom_text else open_clip.CLIP
    with torch.random.fork_rng(devices=[]):  # seed locally; the caller's random stream is untouched
        torch.manual_seed(seed)
        return model_class(**cfg)


def load_weights(model: Any, path: Path, infer_openai: bool = False) -> Any:
    """Load a checkpoint file into ``model`` (or build the model from it with ``infer_openai``)."""
    import open_clip
    from open_clip.model import build_model_from_openai_state_dict

    if infer_openai or model is None:
        state_dict = read_state_dict(path)
        model = build_model_from_openai_state_dict(dict(state_dict), cast_dtype=None)
        model.float()  # it loads through fp16 parameters; load again in fp32 so no bit is lost
        _load_state_dict(model, state_dict)
    elif is_torchscript(path):
        _load_state_dict(model, read_state_dict(path))
    else:  # open_clip's loader handles wrappers, prefixes, conversions and position resizing
        open_clip.load_checkpoint(model, str(path), strict=True)
    return model


def is_torchscript(path: Path) -> bool:
    """True for a TorchScript archive (as OpenAI released CLIP): a zip with a ``code/`` folder."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.split("/", 1)[-1].startswith("code/") for name in archive.namelist())


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint file into a plain state dict (TorchScript, safetensors or torch.save)."""
    import torch
    from open_clip.factory import load_state_dict

    if is_torchscript(path):
        state_dict = dict(torch.jit.load(str(path), map_location="cpu").state_dict())
    else:
        state_dict = dict(load_state_dict(str(path), device="cpu"))
    for key in _NON_WEIGHT_KEYS:
        state_dict.pop(key, None)
    return state_dict


def _load_state_dict(model: Any, state_dict: Mapping[str, torch.Tensor]) -> None:
    state = dict(state_dict)
    scale = state.get("logit_scale")
    if scale is not None and scale.ndim != model.logit_scale.ndim:
        state["logit_scale"] = scale.reshape(model.logit_scale.shape)
    model.load_state_dict(state, strict=True)


def resolve_precision(precision: str, device: str) -> str:
    """The precision actually used: half precisions run on GPU only (CPU falls back to fp32)."""
    if precision not in ("fp32", "fp16", "bf16"):
        raise ValueError(f"unknown precision {precision!r} (fp32, fp16 or bf16)")
    if precision != "fp32" and not device.startswith("cuda"):
        log.warning("precision %s asked on %s: using fp32 (half precision is for GPUs)", precision, device)
        return "fp32"
    return precision


def to_inference(model: Any, device: str, precision: str) -> Any:
    """Eval mode, no gradients, on ``device``; fp16/bf16 cast the whole model (inputs follow)."""
    import torch

    model.eval().requires_grad_(False)
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    return model.to(device=device, dtype=dtype)


def fingerprint(config: ModelConfig, weights: Mapping[str, torch.Tensor] | Path | str) -> str:
    """A short sha256 hex over the weights (a state dict, or a file's bytes) and the preprocessing."""
    digest = hashlib.sha256()
    if isinstance(weights, (str, Path)):
        with open(weights, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    else:
        import torch

        for key in sorted(weights):
            tensor = weights[key].detach().to("cpu").contiguous().reshape(-1)
            digest.update(f"{key}:{tensor.dtype}:{tuple(weights[key].shape)}".encode())
            digest.update(tensor.view(torch.uint8).numpy().data)
    settings = config.model_dump(include=_PREPROCESS_FIELDS)
    digest.update(json.dumps(settings, sort_keys=True).encode())
    return digest.hexdigest()[:FINGERPRINT_CHARS]
