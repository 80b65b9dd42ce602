"""ONNX exports made on demand: a model served on ONNX Runtime without its ONNX files gets them exported once.

``ensure_onnx`` runs before a model's backends load. When the backend chosen for a model is ``onnx``
and the files its config names are missing, the model is exported (fp32, by ``service.export``) into
``<cache root>/onnx/<name>-<key>``, where the cache root is ``settings.cache_dir`` or
``$XDG_CACHE_HOME/clipserve`` (``~/.cache/clipserve``) and the key is the first 12 hex digits of a
hash of what the export depends on: the weights (a file's bytes, or the pretrained tag or seed), the
architecture and the preprocessing. Later starts find that folder and export nothing. The export is
written to a temporary folder that is renamed into place, so an interrupted export never leaves a
folder that looks complete.

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
from pathlib import Path
from typing import Any

from service.clip.loading import HF_PREFIX, fingerprint
from service.clip.model_config import ModelConfig, read_config
from service.config import Settings
from service.errors import NotFound
from service.runtime.factory import backend_name

log = logging.getLogger(__name__)

CACHE_FORMAT = 1  # bump when the exported graphs change, so older cached exports are not reused
KEY_CHARS = 12
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


def _file_digests(config: ModelConfig, source: Path) -> list[str]:
    """Digests of a weights file, or of every file of a weights folder (a Hugging Face CLIP folder)."""
    if source.is_file():
        return [fingerprint(config, source)]
    files = sorted(p for p in source.rglob("*") if p.is_file()) if source.is_dir() else []
    return [f"{p.relative_to(source)}:{fingerprint(config, p)}" for p in files]


def cache_key(config: ModelConfig) -> str:
    """A hash of what ``config``'s export depends on: weights, architecture, preprocessing, export format."""
    from service.export import DEFAULT_OPSET

    weights: list[str] = [f"random seed {config.seed}"]
    if config.weights is not None:
        source = config.resolve(config.weights.removeprefix(HF_PREFIX))
        weights = _file_digests(config, source) or [f"pretrained {config.weights}"]  # a tag: a fixed download
    arch = [fingerprint(config, config.resolve(config.arch_config))] if config.arch_config else []
    parts: dict[str, Any] = {
        "format": CACHE_FORMAT, "opset": DEFAULT_OPSET, "weights": weights, "arch_config": arch,
        "model": config.model_dump(mode="json", exclude=_NOT_KEYED),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:KEY_CHARS]


def cache_folder(config: ModelConfig, settings: Settings) -> Path:
    """Where ``config``'s on-demand export lives: ``<cache root>/onnx/<name>-<key>``."""
    from service.export import default_name

    return cache_root(settings) / "onnx" / f"{default_name(config.name)}-{cache_key(config)}"


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
    """Export ``config`` (fp32) into a temporary folder, then rename it to ``folder``; its config."""
    from service.export import ExportOptions, export_model

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    tmp.chmod(0o755)  # mkdtemp's 0700 would hide a cache shared with the serving user
    try:
        with _quiet_exporter():
            export_model(config, tmp, config.name, ExportOptions(), settings.cache_dir)
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


def ensure_onnx(config: ModelConfig, settings: Settings) -> ModelConfig:
    """``config``, with ONNX files that exist when the backend chosen for it is ``onnx``.

    Returned unchanged when the backend is not onnx or the config's ONNX files exist. Otherwise the
    config of the cached export (``cache_folder``), exported first if the cache lacks it; that
    needs torch and open_clip. Raises NotFound, naming the missing files and the export command, when
    they cannot be imported.
    """
    if backend_name(config, settings) != "onnx":
        return config
    from service.runtime.onnx_backend import model_files

    try:
        model_files(config)
        return config
    except NotFound as exc:
        missing = exc
    folder = cache_folder(config, settings)
    cached = _cached(folder)
    if cached is None:
        cached = _export_on_demand(config, folder, settings, missing)
    else:
        log.info("model %s: serving the ONNX export cached in %s", config.name, folder)
    return cached.model_copy(update={"name": config.name})  # the id clients asked for, whoever exported it


def _export_on_demand(config: ModelConfig, folder: Path, settings: Settings, missing: NotFound) -> ModelConfig:
    """Export ``config`` into the cache ``folder`` where torch can be imported, else raise NotFound."""
    begin = time.perf_counter()
    module = _missing_exporter()
    if module is not None:
        raise NotFound(f"{missing.message}. It cannot be exported on demand here: {module} cannot be imported "
                       f"(install the torch extra: {TORCH_EXTRA})")
    if folder.exists():
        log.warning("model %s: removing the incomplete ONNX export in %s", config.name, folder)
        shutil.rmtree(folder)
    log.warning("model %s has no ONNX files: exporting it (fp32) to %s, once", config.name, folder)
    exported = _export(config, folder, settings)
    log.warning("model %s: exported to ONNX in %.1f s; later starts reuse %s",
                config.name, time.perf_counter() - begin, folder)
    return exported
