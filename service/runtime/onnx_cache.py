"""ONNX Runtime by default: a model without ONNX files gets them exported once, on its first start.

``choose_backend`` runs before a model's backends load and says which runtime serves it and why. A
model whose backend is ``auto`` (the default of every model that does not name one: ``ARCH``,
``ARCH:PRETRAINED``, ``ARCH:/path/to/checkpoint``, Hugging Face folders, repository entries without a
``backend``) or ``onnx`` is served on ONNX Runtime. Where the files its config names are missing, the
model is exported (fp32, by ``service.export``) into ``<cache root>/onnx/<name>-<key>``, where the
cache root is ``settings.cache_dir`` or ``$XDG_CACHE_HOME/clipserve`` (``~/.cache/clipserve``) and the
key is the first 12 hex digits of a hash of what the export depends on: the weights, the architecture
and the preprocessing. Later starts find that folder and export nothing.

The weights enter the key by a ``stat``, not by their bytes: each file's resolved path, size and
modification time, so a start with a cached export never reads a multi-gigabyte checkpoint. The
export stores the weights' sha256 digests beside the graphs; ``onnx_cache_verify`` checks them at
start (reading the weights) and exports again where they differ. The export is written to a
temporary folder that is renamed into place, so an interrupted export never leaves a folder that
looks complete.

When the export of an ``auto`` model fails, the model is served on torch, with one warning naming
the reason; ``--backend onnx`` (or a config saying ``onnx``) makes that failure a start-up error and
``--backend torch`` skips the export. A model that cannot be loaded at all (a missing checkpoint, an
unknown architecture) is a start-up error either way.

Only the export imports torch (lazily): a model whose ONNX files exist, or are in the cache, is served
without it. The bundled demo model is served this way (its graphs are not committed).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.clip.loading import HF_PREFIX, arch_config, fingerprint, resolve_weights
from service.clip.model_config import ModelConfig, read_config
from service.config import SettingError, Settings
from service.errors import NotFound
from service.runtime.factory import backend_name

log = logging.getLogger(__name__)

CACHE_FORMAT = 2  # bump when the exported graphs change, so older cached exports are not reused
KEY_CHARS = 12
DIGESTS_FILE = "weights.sha256.json"  # the weights' digests, stored with the export (onnx_cache_verify)
REASON_CHARS = 300
EXPORT_MODULES = ("torch", "open_clip", "onnx")  # the torch extra: what an export imports
TORCH_EXTRA = "pip install 'clipserve[torch]'"
QUIET_LOGGERS = ("onnxscript", "onnx_ir")  # torch.onnx's dynamo exporter logs each rewrite at INFO
# Fields that describe how the graphs are served, not what they compute: left out of the key.
_NOT_KEYED = {"name", "path", "backend", "onnx", "precision", "embed_dim", "logit_scale", "weights", "arch_config"}


def cache_root(settings: Settings) -> Path:
    """clipserve's cache folder: ``settings.cache_dir``, else ``$XDG_CACHE_HOME/clipserve`` (``~/.cache/clipserve``).

    XDG_CACHE_HOME is honoured as torch, open_clip and Hugging Face do: the container images set it to a
    writable ``/tmp/cache`` under a read-only root file system.
    """
    if settings.cache_dir is not None:
        return settings.cache_dir
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "clipserve"


def weight_files(config: ModelConfig) -> list[Path]:
    """The local files ``config``'s weights come from: a checkpoint, or every file of a Hugging Face
    folder; none for random weights or an open_clip pretrained tag."""
    if config.weights is None:
        return []
    source = config.resolve(config.weights.removeprefix(HF_PREFIX))
    if source.is_file():
        return [source]
    return sorted(p for p in source.rglob("*") if p.is_file()) if source.is_dir() else []


def _stamp(path: Path) -> str:
    """A file's identity without reading it: resolved path, size and modification time (one ``stat``)."""
    status = path.stat()
    return f"{path.resolve()}:{status.st_size}:{status.st_mtime_ns}"


def weight_digests(config: ModelConfig) -> dict[str, str]:
    """The sha256 of each weights file (``weight_files``), by resolved path: reads every byte."""
    digests = {}
    for path in weight_files(config):
        with open(path, "rb") as f:
            digests[str(path.resolve())] = hashlib.file_digest(f, "sha256").hexdigest()
    return digests


def cache_key(config: ModelConfig) -> str:
    """A hash of what ``config``'s export depends on: weights, architecture, preprocessing, export format.

    Cheap for multi-gigabyte checkpoints: weights files enter by ``_stamp`` (a ``stat``), not by content.
    """
    from service.export import DEFAULT_OPSET

    weights: list[str] = [f"random seed {config.seed}"]
    if config.weights is not None:  # a pretrained tag names a fixed download
        weights = [_stamp(p) for p in weight_files(config)] or [f"pretrained {config.weights}"]
    arch = [fingerprint(config, config.resolve(config.arch_config))] if config.arch_config else []  # a small JSON
    parts: dict[str, Any] = {
        "format": CACHE_FORMAT, "opset": DEFAULT_OPSET, "weights": weights, "arch_config": arch,
        "model": config.model_dump(mode="json", exclude=_NOT_KEYED),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:KEY_CHARS]


def cache_folder(config: ModelConfig, settings: Settings) -> Path:
    """Where ``config``'s on-demand export lives: ``<cache root>/onnx/<name>-<key>``; ``ARCH:/path/ckpt.pt``
    is named ``ARCH-ckpt.pt`` (the architecture kept, the folders dropped)."""
    from service.export import default_name

    arch, colon, weights = config.name.partition(":")
    name = f"{arch}-{Path(weights).name}" if colon and "/" in weights else config.name
    return cache_root(settings) / "onnx" / f"{default_name(name)}-{cache_key(config)}"


def _cached(folder: Path) -> ModelConfig | None:
    """The config of a complete export in ``folder`` (config.json and both graphs), else None."""
    from service.runtime.onnx_backend import model_files

    if not folder.is_dir():
        return None
    try:
        config = read_config(folder)
        model_files(config)
    except (NotFound, OSError, ValueError):
        return None
    return config


def _missing_exporter() -> str | None:
    """The first module of the torch extra that is not installed here (None: an export can run).

    Looked up, not imported: importing torch takes seconds, and the export does it anyway.
    """
    for name in EXPORT_MODULES:
        try:
            if importlib.util.find_spec(name) is None:
                return name
        except (ImportError, ValueError):  # a finder that refuses it, or a module set to None
            return name
    return None


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter's libraries log only warnings meanwhile (their INFO lines would flood the server's log)."""
    loggers = [logging.getLogger(name) for name in QUIET_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(max(logger.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _export(config: ModelConfig, folder: Path, settings: Settings) -> ModelConfig:
    """Export ``config`` (fp32) into a temporary folder, then rename it to ``folder``; its config.

    The weights' digests are stored with the graphs, for ``onnx_cache_verify``.
    """
    from service.export import ExportOptions, export_model

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    tmp.chmod(0o755)  # mkdtemp's 0700 would hide a cache shared with the serving user
    try:
        with _quiet_exporter():
            export_model(config, tmp, config.name, ExportOptions(), settings.cache_dir)
        (tmp / DIGESTS_FILE).write_text(json.dumps(weight_digests(config), indent=2) + "\n")
        try:
            tmp.rename(folder)
        except OSError:  # another process finished the same export first: use its folder
            if _cached(folder) is None:
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    exported = _cached(folder)
    if exported is None:
        raise RuntimeError(f"model {config.name!r}: the ONNX export in {folder} is incomplete")
    return exported


@dataclass(frozen=True)
class BackendChoice:
    """The config to load (ONNX files found or exported, or the torch fallback's) and why that backend."""

    config: ModelConfig
    reason: str  # for the log and /models: "exported on first start, cached in ...", "export failed: ..."


def choose_backend(config: ModelConfig, settings: Settings) -> BackendChoice:
    """The backend that serves ``config`` and the config to load it with, exporting to ONNX if needed.

    ``auto`` models whose export fails fall back to torch (one warning naming the reason); a forced
    ``onnx`` raises instead. Errors that torch would meet too (a missing checkpoint, an unknown
    architecture: SettingError, NotFound) are raised either way.
    """
    name = backend_name(config, settings)
    if name != "onnx":
        return BackendChoice(config, _not_onnx_reason(config, settings, name))
    if "onnx" in (settings.backend, config.backend):
        return _onnx(config, settings)
    try:
        return _onnx(config, settings)
    except (SettingError, NotFound):
        raise
    except Exception as exc:  # whatever the exporter meets: an operator it lacks, a graph that differs
        detail = (str(exc).strip().splitlines() or [""])[0][:REASON_CHARS]
        reason = f"export failed: {type(exc).__name__}: {detail}"
        log.warning("model %s: serving on torch, not ONNX Runtime: the %s (--backend torch skips the export)",
                    config.name, reason)
        log.debug("the ONNX export of %s failed", config.name, exc_info=True)
        return BackendChoice(config.model_copy(update={"backend": "torch"}), reason)


def ensure_onnx(config: ModelConfig, settings: Settings) -> ModelConfig:
    """``choose_backend``'s config: with ONNX files that exist when the backend chosen is ``onnx``."""
    return choose_backend(config, settings).config


def _not_onnx_reason(config: ModelConfig, settings: Settings, name: str) -> str:
    if settings.backend == name:
        return f"forced by --backend {name}"
    return f"the model's config says backend {name}"


def _onnx(config: ModelConfig, settings: Settings) -> BackendChoice:
    """``config`` with ONNX files: its own, the cached export's, or a new export's (NotFound where torch
    cannot be imported to make one)."""
    from service.runtime.onnx_backend import model_files

    if config.onnx is not None or config.path is not None:  # a bare ARCH:... spec has no folder to look in
        try:
            _, image, _ = model_files(config)
            return BackendChoice(config, f"the model's own ONNX files ({image.parent})")
        except NotFound as exc:
            missing = exc
    else:
        missing = NotFound(f"model {config.name!r} has no ONNX export")
    folder = cache_folder(config, settings)
    cached = _cached(folder)
    if cached is not None and settings.onnx_cache_verify:
        cached = _verified(config, cached, folder)
    if cached is None:
        cached = _export_on_demand(config, folder, settings, missing)
        reason = f"exported on first start, cached in {folder}"
    else:
        log.info("model %s: serving the ONNX export cached in %s", config.name, folder)
        reason = f"the ONNX export cached in {folder}" + (" (digest verified)" if settings.onnx_cache_verify else "")
    return BackendChoice(cached.model_copy(update=_own_fields(config)), reason)


def _own_fields(config: ModelConfig) -> dict[str, str]:
    """What a cached export takes from the config it serves, not from whichever entry exported it: the id
    clients asked for, and a local tokenizer folder (entries with equal graphs share one export, yet each
    tokenizes with its own files; the tokenizer is no part of the graphs)."""
    own = {"name": config.name}
    tokenizer = config.local_tokenizer()
    if tokenizer is not None:
        own["tokenizer"] = str(tokenizer)
    return own


def _verified(config: ModelConfig, cached: ModelConfig, folder: Path) -> ModelConfig | None:
    """``cached`` when the weights' digests equal those stored with the export, else None (export again)."""
    try:
        stored = json.loads((folder / DIGESTS_FILE).read_text())
    except (OSError, ValueError):
        stored = None
    if stored == weight_digests(config):
        return cached
    log.warning("model %s: the weights differ from the digests stored with the ONNX export in %s "
                "(or none are stored): exporting again", config.name, folder)
    return None


def _export_on_demand(config: ModelConfig, folder: Path, settings: Settings, missing: NotFound) -> ModelConfig:
    """Export ``config`` into the cache ``folder`` where torch can be imported, else raise NotFound."""
    begin = time.perf_counter()
    module = _missing_exporter()
    if module is not None:
        raise NotFound(f"{missing.message}. It cannot be exported on demand here: {module} cannot be imported "
                       f"(install the torch extra: {TORCH_EXTRA})")
    # A missing checkpoint or an unknown architecture: the start-up error, before any word of exporting.
    if resolve_weights(config, settings.cache_dir).kind != "hf":  # a Hugging Face folder carries its architecture
        arch_config(config)
    if folder.exists():
        log.warning("model %s: removing the incomplete or outdated ONNX export in %s", config.name, folder)
        shutil.rmtree(folder)
    log.warning("model %s has no ONNX files: exporting it (fp32) to %s, once", config.name, folder)
    exported = _export(config, folder, settings)
    log.warning("model %s: exported to ONNX in %.1f s; later starts reuse %s",
                config.name, time.perf_counter() - begin, folder)
    return exported
